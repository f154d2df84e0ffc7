//! Guest memory layout (DESIGN §7.2): one function, [`layout`], places a guest's RAM, MMIO hole and
//! vEPC sections and describes the result the three ways a guest learns it — an E820-style memory
//! map, CPUID leaf 0x12 and an ACPI-style EPC device — plus the [`DomainSpec`] for `vsgx-hv`.
//!
//! The rule:
//! - RAM below the MMIO hole starts at 0; the hole is `[4 GiB − mmio_hole, 4 GiB)`; RAM that does
//!   not fit below the hole continues at 4 GiB.
//! - vEPC sections without a `base` are placed one after the other, in config order, from the end of
//!   the RAM above 4 GiB (from 4 GiB when all RAM fits below the hole), as QEMU does. A section
//!   that would overlap a section with a user-given base is moved to just past it.
//! - A user-given base must be 4 KiB aligned, must not overlap RAM, the hole or another section,
//!   and the section must end within the guest physical address width
//!   ([`HostInfo::guest_phys_bits`], 52 bits).
//! - Sizes are whole MiB.
//!
//! The memory map lists RAM as `ram`, the hole as `mmio` and each vEPC section as `reserved`, sorted
//! by address; CPUID 0x12 sub-leaf `2 + i` and ACPI resource `i` describe `epc_sections[i]`, in
//! config order.
//!
//! The guest agent's mailbox ([`GuestLayout::agent_mailbox`], [`AGENT_MAILBOX_SIZE`]) is the first
//! 2 MiB of the MMIO hole: device memory shared by host and guest, like a shared-memory BAR. It is
//! backed by the domain's memory (it is in [`DomainSpec::ram`]) but is not RAM the guest allocates
//! from, so the memory map keeps showing the whole hole as `mmio`. The hole is at least 256 MiB
//! (xl's lower bound), so the mailbox always fits.

use std::fmt;

use vsgx_hv::domain::DomainSpec;
use vsgx_hv::policy::{CpuidPolicy, SgxFeatures, Unsupported, VepcSection};
use vsgx_isa::cpuid::{CpuidError, CpuidResult, EpcProperty, EpcSectionLeaf, FIRST_EPC_SUBLEAF, LEAF_SGX};

use crate::config::GuestConfig;
use crate::host::HostInfo;

/// 4 GiB: the top of the MMIO hole and the start of high RAM.
pub const FOUR_GIB: u64 = 1 << 32;
/// The ACPI hardware id of the SGX EPC device.
pub const EPC_ACPI_HID: &str = "INT0E0C";
/// The ACPI `_STR` of the EPC device (as QEMU and real firmware name it).
pub const EPC_ACPI_STR: &str = "Enclave Page Cache 1.0";

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// Size of the guest agent's mailbox region: 2 MiB, room for the agent's header page and 1 MiB
/// payload area with the rest reserved for later protocol versions.
pub const AGENT_MAILBOX_SIZE: u64 = 2 * MIB;

/// Type of a memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryType {
    /// Guest RAM (E820 type 1).
    Ram,
    /// The MMIO hole below 4 GiB.
    Mmio,
    /// Reserved (E820 type 2): the vEPC sections.
    Reserved,
}

impl MemoryType {
    /// `ram`, `mmio` or `reserved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ram => "ram",
            Self::Mmio => "mmio",
            Self::Reserved => "reserved",
        }
    }
}

impl fmt::Display for MemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the E820-style memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryRegion {
    /// Guest-physical base.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// What is there.
    pub kind: MemoryType,
}

impl MemoryRegion {
    /// End (exclusive).
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// One CPUID leaf/sub-leaf as the guest reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuidEntry {
    /// EAX input.
    pub leaf: u32,
    /// ECX input.
    pub subleaf: u32,
    /// The registers.
    pub regs: CpuidResult,
}

/// One memory resource of the ACPI EPC device (`QWordMemory` in `_CRS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AcpiMemoryResource {
    /// Minimum (base) address.
    pub base: u64,
    /// Length in bytes.
    pub length: u64,
}

/// The ACPI-style EPC device: `_HID` INT0E0C and one memory resource per vEPC section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiEpcDevice {
    /// `_HID`: [`EPC_ACPI_HID`].
    pub hid: &'static str,
    /// `_STR`: [`EPC_ACPI_STR`].
    pub description: &'static str,
    /// `_CRS`: one memory resource per section, in section order.
    pub resources: Vec<AcpiMemoryResource>,
}

impl AcpiEpcDevice {
    /// The device in ASL, as firmware would declare it.
    pub fn to_asl(&self) -> String {
        let mut asl = format!(
            "Device (EPC)\n{{\n    Name (_HID, EisaId (\"{}\"))\n    Name (_STR, Unicode (\"{}\"))\n    \
             Name (_CRS, ResourceTemplate ()\n    {{\n",
            self.hid, self.description
        );
        for r in &self.resources {
            asl.push_str(&format!(
                "        QWordMemory (ResourceConsumer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,\n            \
                 0x0, {:#018x}, {:#018x}, 0x0, {:#018x})\n",
                r.base,
                r.base + r.length - 1,
                r.length
            ));
        }
        asl.push_str("    })\n    Method (_STA, 0, NotSerialized) { Return (0x0F) }\n}\n");
        asl
    }
}

/// A guest's memory layout, described three ways, and the domain spec that creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// E820-style map sorted by address: RAM, the MMIO hole (`mmio`) and the vEPC (`reserved`).
    pub memory_map: Vec<MemoryRegion>,
    /// vEPC sections in config order (= CPUID sub-leaf and ACPI resource order).
    pub epc_sections: Vec<VepcSection>,
    /// CPUID leaf 0x12: sub-leaves 0 and 1, one per section from 2, and the all-zero sub-leaf that
    /// ends the enumeration.
    pub cpuid: Vec<CpuidEntry>,
    /// The ACPI EPC device.
    pub acpi_epc: AcpiEpcDevice,
    /// The guest agent's mailbox: `(base, size)`, inside the MMIO hole, backed by domain memory.
    pub agent_mailbox: (u64, u64),
    /// The CPUID policy the hypervisor will derive for this domain (the source of `cpuid`).
    pub cpuid_policy: CpuidPolicy,
    /// What `vsgx-hv` creates the domain from.
    pub domain: DomainSpec,
}

impl GuestLayout {
    /// Checks that the memory map, CPUID and ACPI describe the same vEPC, decoding CPUID with the
    /// architectural codec; `Err` says where they differ. [`layout`] only returns layouts that pass.
    pub fn check_agreement(&self) -> Result<(), String> {
        let n = self.epc_sections.len();
        let reserved: Vec<&MemoryRegion> = self.memory_map.iter().filter(|r| r.kind == MemoryType::Reserved).collect();
        if reserved.len() != n || self.acpi_epc.resources.len() != n {
            return Err(format!(
                "{n} sections, {} reserved memory-map entries, {} ACPI resources",
                reserved.len(),
                self.acpi_epc.resources.len()
            ));
        }
        let subleaf = |s: u32| self.cpuid.iter().find(|e| e.leaf == LEAF_SGX && e.subleaf == s).map(|e| e.regs);
        for (i, s) in self.epc_sections.iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| "too many sections".to_string())?;
            let sub = FIRST_EPC_SUBLEAF + index;
            let regs = subleaf(sub).ok_or_else(|| format!("no CPUID sub-leaf {sub} for section {i}"))?;
            let leaf = EpcSectionLeaf::decode(sub, regs).map_err(|e| e.to_string())?;
            let Some(leaf) = leaf else {
                return Err(format!("CPUID sub-leaf {sub} ends the enumeration, but section {i} exists"));
            };
            if (leaf.base, leaf.size) != (s.gpa, s.size) {
                return Err(format!("section {i}: CPUID says [{:#x}, +{:#x})", leaf.base, leaf.size));
            }
            let acpi = self.acpi_epc.resources[i];
            if (acpi.base, acpi.length) != (s.gpa, s.size) {
                return Err(format!("section {i}: ACPI says [{:#x}, +{:#x})", acpi.base, acpi.length));
            }
            if !reserved.iter().any(|r| (r.base, r.size) == (s.gpa, s.size)) {
                return Err(format!("section {i} [{:#x}, +{:#x}) is not in the memory map", s.gpa, s.size));
            }
        }
        let end = FIRST_EPC_SUBLEAF + u32::try_from(n).map_err(|_| "too many sections".to_string())?;
        match subleaf(end).map(|r| EpcSectionLeaf::decode(end, r)) {
            Some(Ok(None)) => {}
            other => return Err(format!("CPUID sub-leaf {end} should end the enumeration, found {other:?}")),
        }
        if self.domain.epc != self.epc_sections || self.cpuid_policy.sections != self.epc_sections {
            return Err("the domain spec's vEPC differs from the layout".into());
        }
        let mut ram: Vec<(u64, u64)> =
            self.memory_map.iter().filter(|r| r.kind == MemoryType::Ram).map(|r| (r.base, r.size)).collect();
        ram.push(self.agent_mailbox);
        ram.sort_unstable();
        if ram != self.domain.ram {
            return Err("the domain spec's memory differs from the memory map's RAM plus the agent mailbox".into());
        }
        let (mailbox, size) = self.agent_mailbox;
        if !self.memory_map.iter().any(|r| r.kind == MemoryType::Mmio && r.base <= mailbox && mailbox + size <= r.end())
        {
            return Err(format!("the agent mailbox [{mailbox:#x}, +{size:#x}) is not inside the MMIO hole"));
        }
        for pair in self.memory_map.windows(2) {
            if pair[0].end() > pair[1].base {
                return Err(format!("memory-map entries overlap: {:?} and {:?}", pair[0], pair[1]));
            }
        }
        Ok(())
    }
}

/// What occupies a guest-physical range a section collides with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occupant {
    /// Guest RAM.
    Ram,
    /// The MMIO hole.
    MmioHole,
    /// Another vEPC section (its index).
    Section(usize),
}

impl fmt::Display for Occupant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ram => f.write_str("RAM"),
            Self::MmioHole => f.write_str("the MMIO hole"),
            Self::Section(i) => write!(f, "vEPC section {i}"),
        }
    }
}

/// A layout that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The MMIO hole is not between 0 and 4 GiB.
    #[error("an MMIO hole of {mib} MiB does not fit below 4 GiB")]
    Hole {
        /// The hole's size in MiB.
        mib: u64,
    },
    /// RAM would end beyond the guest physical address width.
    #[error("{mib} MiB of RAM would end at {end:#x}, beyond the {bits}-bit guest physical address space")]
    RamTooLarge {
        /// RAM size in MiB.
        mib: u64,
        /// Its end (saturating).
        end: u64,
        /// Address width.
        bits: u8,
    },
    /// A section's size is zero or not whole MiB.
    #[error("vEPC section {section}: size {size:#x} is not a whole, non-zero number of MiB")]
    Size {
        /// Section index.
        section: usize,
        /// Its size.
        size: u64,
    },
    /// A user-given base is not 4 KiB aligned.
    #[error("vEPC section {section}: base {base:#x} is not 4 KiB aligned")]
    Misaligned {
        /// Section index.
        section: usize,
        /// Its base.
        base: u64,
    },
    /// A section overlaps RAM, the hole or another section.
    #[error("vEPC section {section} [{:#x}, {:#x}) overlaps {other} [{:#x}, {:#x})", range.0, range.1, other_range.0, other_range.1)]
    Overlap {
        /// Section index.
        section: usize,
        /// Its range.
        range: (u64, u64),
        /// What it overlaps.
        other: Occupant,
        /// That range.
        other_range: (u64, u64),
    },
    /// A section would end beyond the guest physical address width.
    #[error("vEPC section {section} would end at {end:#x}, beyond the {bits}-bit guest physical address space")]
    AboveAddressWidth {
        /// Section index.
        section: usize,
        /// Its end (saturating).
        end: u64,
        /// Address width.
        bits: u8,
    },
    /// The host lacks a feature the guest asks for.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// A section cannot be enumerated in CPUID.
    #[error("vEPC section {section}: {source}")]
    Cpuid {
        /// Section index.
        section: usize,
        /// The codec's answer.
        source: CpuidError,
    },
}

/// Lays out `config`'s guest on `host` (DESIGN §7.2; see the [module documentation](self)).
///
/// The CPUID sub-leaves come from [`CpuidPolicy::derive`] with the host's capabilities (all of
/// them: a config cannot restrict SGX features yet), encoded by `vsgx_isa`'s codecs.
pub fn layout(config: &GuestConfig, host: &HostInfo) -> Result<GuestLayout, LayoutError> {
    let bits = host.guest_phys_bits.min(52);
    let limit = 1u64 << bits;
    let hole = config
        .mmio_hole_mib
        .checked_mul(MIB)
        .filter(|&h| h <= FOUR_GIB)
        .ok_or(LayoutError::Hole { mib: config.mmio_hole_mib })?;
    let hole_start = FOUR_GIB - hole;
    let memory = config.memory_mib.saturating_mul(MIB);
    let low = memory.min(hole_start);
    let high = memory - low;
    let high_end = FOUR_GIB.saturating_add(high);
    if high_end > limit {
        return Err(LayoutError::RamTooLarge { mib: config.memory_mib, end: high_end, bits });
    }
    let mut occupied: Vec<(u64, u64, Occupant)> = Vec::new();
    let mut ram = Vec::new();
    if low > 0 {
        ram.push((0, low));
        occupied.push((0, low, Occupant::Ram));
    }
    if hole > 0 {
        occupied.push((hole_start, FOUR_GIB, Occupant::MmioHole));
    }
    if high > 0 {
        ram.push((FOUR_GIB, high));
        occupied.push((FOUR_GIB, high_end, Occupant::Ram));
    }

    // Sections with a base first: each checked against RAM, the hole and the earlier ones.
    let mut placed: Vec<Option<(u64, u64)>> = vec![None; config.epc.len()];
    for (i, s) in config.epc.iter().enumerate() {
        if s.size == 0 || !s.size.is_multiple_of(MIB) {
            return Err(LayoutError::Size { section: i, size: s.size });
        }
        let Some(base) = s.base else { continue };
        if !base.is_multiple_of(PAGE) {
            return Err(LayoutError::Misaligned { section: i, base });
        }
        let end = base.saturating_add(s.size);
        if end > limit {
            return Err(LayoutError::AboveAddressWidth { section: i, end, bits });
        }
        if let Some(&(b, e, other)) = occupied.iter().find(|&&(b, e, _)| base < e && b < end) {
            return Err(LayoutError::Overlap { section: i, range: (base, end), other, other_range: (b, e) });
        }
        occupied.push((base, end, Occupant::Section(i)));
        placed[i] = Some((base, end));
    }
    // Then the others, one after the other from the end of high RAM, stepping over fixed sections.
    let mut cursor = high_end;
    for (i, s) in config.epc.iter().enumerate() {
        if placed[i].is_some() {
            continue;
        }
        loop {
            let end = cursor.saturating_add(s.size);
            match occupied.iter().filter(|&&(b, e, _)| cursor < e && b < end).map(|&(_, e, _)| e).max() {
                Some(past) => cursor = past.next_multiple_of(PAGE),
                None => break,
            }
        }
        let end = cursor.saturating_add(s.size);
        if end > limit {
            return Err(LayoutError::AboveAddressWidth { section: i, end, bits });
        }
        occupied.push((cursor, end, Occupant::Section(i)));
        placed[i] = Some((cursor, end));
        cursor = end;
    }

    let epc_sections: Vec<VepcSection> = config
        .epc
        .iter()
        .zip(&placed)
        .map(|(s, p)| VepcSection { gpa: p.map_or(0, |(b, _)| b), size: s.size, node: s.node })
        .collect();
    for (i, s) in epc_sections.iter().enumerate() {
        EpcSectionLeaf { base: s.gpa, size: s.size, property: EpcProperty::ConfidentialityIntegrity }
            .encode()
            .map_err(|source| LayoutError::Cpuid { section: i, source })?;
    }

    let mut memory_map: Vec<MemoryRegion> =
        ram.iter().map(|&(base, size)| MemoryRegion { base, size, kind: MemoryType::Ram }).collect();
    if hole > 0 {
        memory_map.push(MemoryRegion { base: hole_start, size: hole, kind: MemoryType::Mmio });
    }
    memory_map.extend(epc_sections.iter().map(|s| MemoryRegion {
        base: s.gpa,
        size: s.size,
        kind: MemoryType::Reserved,
    }));
    memory_map.sort_by_key(|r| r.base);

    let policy = CpuidPolicy::derive(&host.capabilities, &SgxFeatures::default(), epc_sections.clone())?;
    let last = FIRST_EPC_SUBLEAF + u32::try_from(epc_sections.len()).unwrap_or(u32::MAX - FIRST_EPC_SUBLEAF);
    let cpuid = (0..=last)
        .map(|subleaf| CpuidEntry {
            leaf: LEAF_SGX,
            subleaf,
            regs: policy.cpuid(LEAF_SGX, subleaf, CpuidResult::default()),
        })
        .collect();

    let acpi_epc = AcpiEpcDevice {
        hid: EPC_ACPI_HID,
        description: EPC_ACPI_STR,
        resources: epc_sections.iter().map(|s| AcpiMemoryResource { base: s.gpa, length: s.size }).collect(),
    };
    // xl's smallest hole is 256 MiB; a hole too small for the mailbox is refused like a misfit hole.
    if hole < AGENT_MAILBOX_SIZE {
        return Err(LayoutError::Hole { mib: config.mmio_hole_mib });
    }
    let agent_mailbox = (hole_start, AGENT_MAILBOX_SIZE);
    let mut memory = ram;
    memory.push(agent_mailbox);
    memory.sort_unstable();
    let domain = DomainSpec {
        name: config.name.clone(),
        uuid: config.uuid.0,
        vcpus: config.vcpus,
        ram: memory,
        epc: epc_sections.clone(),
        features: SgxFeatures::default(),
        launch: config.launch_control(),
        provision: config.provision,
    };
    let layout = GuestLayout { memory_map, epc_sections, cpuid, acpi_epc, agent_mailbox, cpuid_policy: policy, domain };
    debug_assert_eq!(layout.check_agreement(), Ok(()));
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vsgx_hv::domain::Domain;
    use vsgx_hv::epc::{DomainId, EpcManager};
    use vsgx_hw::platform::Platform;
    use vsgx_isa::cpu::Cpu;

    use super::*;
    use crate::config::{EpcSectionConfig, GuestConfig};

    const GIB: u64 = 1 << 30;

    fn config(text: &str) -> GuestConfig {
        GuestConfig::parse("t.cfg", text, &HostInfo::embedded()).map(|p| p.config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn lay(text: &str) -> GuestLayout {
        layout(&config(text), &HostInfo::embedded()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn region(base: u64, size: u64, kind: MemoryType) -> MemoryRegion {
        MemoryRegion { base, size, kind }
    }

    #[test]
    fn memory_128_puts_the_epc_at_4_gib() {
        let l = lay("name = \"small\"\nmemory = 128\nepc = 64\n");
        assert_eq!(
            l.memory_map,
            vec![
                region(0, 128 * MIB, MemoryType::Ram),
                region(0xF000_0000, 256 * MIB, MemoryType::Mmio),
                region(0x1_0000_0000, 64 * MIB, MemoryType::Reserved),
            ]
        );
        assert_eq!(l.epc_sections, vec![VepcSection { gpa: 0x1_0000_0000, size: 64 * MIB, node: 0 }]);
        let sub = |s: u32| l.cpuid.iter().find(|e| e.subleaf == s).map(|e| e.regs.to_array());
        assert_eq!(sub(2), Some([0x1, 0x1, 0x0400_0001, 0]));
        assert_eq!(sub(3), Some([0, 0, 0, 0]), "the enumeration ends after the last section");
        assert_eq!(l.cpuid.len(), 4, "sub-leaves 0, 1, 2 and the terminator");
        assert_eq!(l.acpi_epc.hid, "INT0E0C");
        assert_eq!(l.acpi_epc.resources, vec![AcpiMemoryResource { base: 0x1_0000_0000, length: 64 * MIB }]);
        assert_eq!(l.agent_mailbox, (0xF000_0000, 2 * MIB), "the mailbox opens the MMIO hole");
        assert_eq!(l.domain.ram, vec![(0, 128 * MIB), (0xF000_0000, AGENT_MAILBOX_SIZE)]);
        assert_eq!(l.check_agreement(), Ok(()));
    }

    #[test]
    fn memory_8192_with_the_default_hole_puts_the_epc_at_0x2_1000_0000() {
        let l = lay("name = \"big\"\nmemory = 8192\nepc = 64\n");
        assert_eq!(
            l.memory_map,
            vec![
                region(0, 0xF000_0000, MemoryType::Ram),
                region(0xF000_0000, 0x1000_0000, MemoryType::Mmio),
                region(0x1_0000_0000, 0x1_1000_0000, MemoryType::Ram),
                region(0x2_1000_0000, 64 * MIB, MemoryType::Reserved),
            ]
        );
        assert_eq!(l.epc_sections[0].gpa, 0x2_1000_0000);
        assert_eq!(
            l.domain.ram,
            vec![(0, 0xF000_0000), (0xF000_0000, AGENT_MAILBOX_SIZE), (0x1_0000_0000, 0x1_1000_0000)]
        );
        assert_eq!(l.check_agreement(), Ok(()));
    }

    #[test]
    fn ram_that_exactly_fills_the_space_below_the_hole_keeps_the_epc_at_4_gib() {
        let l = lay("name = \"g\"\nmemory = 3840\nepc = 8\n");
        assert_eq!(l.domain.ram, vec![(0, 3840 * MIB), (0xF000_0000, AGENT_MAILBOX_SIZE)]);
        assert_eq!(l.epc_sections[0].gpa, FOUR_GIB);
        let l = lay("name = \"g\"\nmemory = 3841\nepc = 8\n");
        assert_eq!(l.domain.ram, vec![(0, 3840 * MIB), (0xF000_0000, AGENT_MAILBOX_SIZE), (FOUR_GIB, MIB)]);
        assert_eq!(l.epc_sections[0].gpa, FOUR_GIB + MIB);
    }

    #[test]
    fn a_bigger_hole_moves_more_ram_above_4_gib() {
        let l = lay("name = \"g\"\nmemory = 4096\nmmio_hole = 1024\nepc = 16\n");
        assert_eq!(l.domain.ram, vec![(0, 3 * GIB), (3 * GIB, AGENT_MAILBOX_SIZE), (FOUR_GIB, GIB)]);
        assert!(l.memory_map.contains(&region(3 * GIB, GIB, MemoryType::Mmio)));
        assert_eq!(l.epc_sections[0].gpa, 5 * GIB);
    }

    #[test]
    fn several_sections_are_contiguous_in_config_order() {
        let l = lay("name = \"n\"\nmemory = 8192\nepc_sections = [ \"size=96,node=1\", \"size=32,node=0\" ]\n");
        assert_eq!(
            l.epc_sections,
            vec![
                VepcSection { gpa: 0x2_1000_0000, size: 96 * MIB, node: 1 },
                VepcSection { gpa: 0x2_1000_0000 + 96 * MIB, size: 32 * MIB, node: 0 },
            ]
        );
        let sub3 = l.cpuid.iter().find(|e| e.subleaf == 3).map(|e| e.regs);
        let decoded = sub3.and_then(|r| EpcSectionLeaf::decode(3, r).ok().flatten());
        assert_eq!(decoded.map(|s| (s.base, s.size)), Some((0x2_1000_0000 + 96 * MIB, 32 * MIB)));
        assert_eq!(l.check_agreement(), Ok(()));
    }

    #[test]
    fn user_bases_are_kept_and_automatic_sections_step_over_them() {
        let l =
            lay("name = \"b\"\nmemory = 128\nepc_sections = [ \"size=16\", \"size=8,base=0x101000000\", \"size=16\", \
             \"size=4,base=0x10000000\" ]\n");
        let gpas: Vec<u64> = l.epc_sections.iter().map(|s| s.gpa).collect();
        // The first automatic section fills [4 GiB, +16 MiB) right up to the fixed one; the second
        // would overlap it and goes just past it; a fixed section may sit in the gap between low
        // RAM and the hole.
        assert_eq!(gpas, vec![0x1_0000_0000, 0x1_0100_0000, 0x1_0180_0000, 0x1000_0000]);
        assert_eq!(l.check_agreement(), Ok(()));
        let reserved: Vec<u64> =
            l.memory_map.iter().filter(|r| r.kind == MemoryType::Reserved).map(|r| r.base).collect();
        assert_eq!(reserved, vec![0x1000_0000, 0x1_0000_0000, 0x1_0100_0000, 0x1_0180_0000], "sorted by address");
    }

    fn guest(memory_mib: u64, epc: Vec<EpcSectionConfig>) -> GuestConfig {
        let mut c = config("name = \"g\"\n");
        c.memory_mib = memory_mib;
        c.epc = epc;
        c
    }

    fn section(size_mib: u64, base: Option<u64>) -> EpcSectionConfig {
        EpcSectionConfig { size: size_mib * MIB, node: 0, base }
    }

    #[test]
    fn bad_sections_are_refused() {
        let host = HostInfo::embedded();
        let err = |c: GuestConfig| layout(&c, &host).err();
        assert_eq!(
            err(guest(128, vec![section(8, Some(0x100_0000))])),
            Some(LayoutError::Overlap {
                section: 0,
                range: (0x100_0000, 0x180_0000),
                other: Occupant::Ram,
                other_range: (0, 128 * MIB)
            })
        );
        assert_eq!(
            err(guest(128, vec![section(8, Some(0xFF00_0000))])),
            Some(LayoutError::Overlap {
                section: 0,
                range: (0xFF00_0000, 0xFF80_0000),
                other: Occupant::MmioHole,
                other_range: (0xF000_0000, FOUR_GIB)
            })
        );
        assert_eq!(
            err(guest(128, vec![section(8, Some(0x2_0000_0000)), section(8, Some(0x2_0040_0000))])),
            Some(LayoutError::Overlap {
                section: 1,
                range: (0x2_0040_0000, 0x2_00C0_0000),
                other: Occupant::Section(0),
                other_range: (0x2_0000_0000, 0x2_0080_0000)
            })
        );
        assert_eq!(
            err(guest(128, vec![section(8, Some(0x2_0000_0800))])),
            Some(LayoutError::Misaligned { section: 0, base: 0x2_0000_0800 })
        );
        assert_eq!(
            err(guest(128, vec![section(8, Some((1 << 52) - 4 * MIB))])),
            Some(LayoutError::AboveAddressWidth { section: 0, end: (1 << 52) + 4 * MIB, bits: 52 })
        );
        assert_eq!(
            err(guest(128, vec![EpcSectionConfig { size: MIB + 4096, node: 0, base: None }])),
            Some(LayoutError::Size { section: 0, size: MIB + 4096 })
        );
        assert_eq!(
            err(guest(1 << 32, vec![])),
            Some(LayoutError::RamTooLarge { mib: 1 << 32, end: (1 << 52) + 256 * MIB, bits: 52 })
        );
        assert!(err(guest((1 << 32) - 256, vec![])).is_none(), "RAM may reach the top of the address space");
        assert_eq!(
            err(guest((1 << 32) - 256, vec![section(1, None)])),
            Some(LayoutError::AboveAddressWidth { section: 0, end: (1 << 52) + MIB, bits: 52 })
        );
    }

    #[test]
    fn the_hypervisor_reports_what_the_layout_says() {
        let mut platform = vsgx_hw::config::embedded_default();
        platform.seed = Some(7);
        let platform = Platform::new(platform);
        let host = HostInfo::from_platform(&platform);
        assert_eq!(host, HostInfo::embedded());
        let l = layout(
            &config("name = \"h\"\nmemory = 64\nvcpus = 2\nepc_sections = [\"size=16,node=1\", \"size=8\"]\n"),
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let manager = Arc::new(EpcManager::new(platform));
        let domain = Domain::create(DomainId(1), l.domain.clone(), manager).unwrap_or_else(|e| panic!("{e}"));
        let mut vcpu = domain.vcpu(1).unwrap_or_else(|| panic!("vCPU 1"));
        for e in &l.cpuid {
            assert_eq!(vcpu.cpuid(e.leaf, e.subleaf), e.regs, "CPUID.({:#x},{})", e.leaf, e.subleaf);
        }
        assert_eq!(domain.epc_pages().len() as u64, 24 * MIB / 4096);
        let _ = domain.destroy();
    }

    #[test]
    fn the_agreement_check_notices_any_description_that_differs() {
        let good = lay("name = \"c\"\nmemory = 8192\nepc_sections = [\"size=16\", \"size=8,node=1\"]\n");
        assert_eq!(good.check_agreement(), Ok(()));
        let mut l = good.clone();
        l.acpi_epc.resources[1].base += 4096;
        assert!(l.check_agreement().is_err_and(|e| e.contains("ACPI")));
        let mut l = good.clone();
        l.cpuid[3].regs.ecx += 0x1000;
        assert!(l.check_agreement().is_err_and(|e| e.contains("CPUID")));
        let mut l = good.clone();
        l.cpuid.pop();
        assert!(l.check_agreement().is_err_and(|e| e.contains("end the enumeration")));
        let mut l = good.clone();
        l.memory_map.retain(|r| r.kind != MemoryType::Reserved || r.base != good.epc_sections[0].gpa);
        assert!(l.check_agreement().is_err());
        let mut l = good.clone();
        l.domain.epc[0].size = MIB;
        assert!(l.check_agreement().is_err_and(|e| e.contains("domain spec")));
        let mut l = good.clone();
        l.domain.ram.pop();
        assert!(l.check_agreement().is_err_and(|e| e.contains("RAM")));
        let mut l = good;
        l.agent_mailbox.0 = 0;
        assert!(l.check_agreement().is_err());
    }

    #[test]
    fn the_acpi_description_in_asl() {
        let l = lay("name = \"a\"\nepc = 2\n");
        let asl = l.acpi_epc.to_asl();
        assert!(asl.contains("Name (_HID, EisaId (\"INT0E0C\"))"), "{asl}");
        assert!(asl.contains("0x0000000100000000, 0x00000001001fffff, 0x0, 0x0000000000200000"), "{asl}");
    }
}
