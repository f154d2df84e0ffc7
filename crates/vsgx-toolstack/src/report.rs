//! What `sgxinfo` (the physical SGX and EPC) and `sgxlist` (EPC per guest) report, with the JSON
//! field names the CLI promises. Built from the platform's CPUID and one [`EpcStats`] snapshot, so
//! every figure in one report comes from the same instant.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vsgx_hv::domain::DomainSpec;
use vsgx_hv::epc::{DomainEpc, DomainId, EpcStats};
use vsgx_hv::policy::VepcSection;
use vsgx_isa::cpuid::CpuidResult;

use crate::config::EpcPolicy;
use crate::layout::MemoryRegion;

/// Where `vsgxd` listens and the CLI connects unless told otherwise: `$VSGX_SOCKET`, else
/// `$XDG_RUNTIME_DIR/vsgxd.sock`, else `/run/vsgxd.sock`.
pub fn default_socket() -> PathBuf {
    if let Some(p) = std::env::var_os("VSGX_SOCKET") {
        return PathBuf::from(p);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => Path::new(&dir).join("vsgxd.sock"),
        None => PathBuf::from("/run/vsgxd.sock"),
    }
}

/// One memory map entry as reported: `{"base", "size", "type"}` with type `ram`, `mmio` or
/// `reserved`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegionInfo {
    /// Guest-physical base.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// `ram`, `mmio` or `reserved`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl From<&MemoryRegion> for RegionInfo {
    fn from(r: &MemoryRegion) -> Self {
        Self { base: r.base, size: r.size, kind: r.kind.as_str() }
    }
}

const PAGE: u64 = 4096;

/// One EPC section: physical on the host, guest-physical in a guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SectionInfo {
    /// Base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// NUMA node.
    pub node: u32,
}

impl From<&VepcSection> for SectionInfo {
    fn from(s: &VepcSection) -> Self {
        Self { base: s.gpa, size: s.size, node: s.node }
    }
}

/// `vsgx sgxinfo`: the host's SGX features and its EPC.
///
/// `epc_used_bytes` counts pages that back guests' vEPC or that the hypervisor holds;
/// `free + used + quarantined = total` always holds, since [`EpcStats`] accounts every page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SgxInfo {
    /// SGX1 leaves (CPUID.12H.0:EAX\[0\]).
    pub sgx1: bool,
    /// SGX2 leaves (CPUID.12H.0:EAX\[1\]).
    pub sgx2: bool,
    /// Flexible launch control (CPUID.7.0:ECX\[30\]).
    pub flc: bool,
    /// Key separation and sharing: ATTRIBUTES.KSS settable (CPUID.12H.1:EAX\[7\]).
    pub kss: bool,
    /// Whether the host oversubscribes EPC. Always false: static partitioning is the only policy.
    pub oversub: bool,
    /// Physical EPC sections, in enumeration order.
    pub sections: Vec<SectionInfo>,
    /// All EPC.
    pub epc_total_bytes: u64,
    /// EPC not given to anyone.
    pub epc_free_bytes: u64,
    /// EPC backing guests' vEPC or held by the hypervisor.
    pub epc_used_bytes: u64,
    /// EPC taken out of service (EREMOVE kept failing).
    pub epc_quarantined_bytes: u64,
}

impl SgxInfo {
    /// The report for a host whose CPUID is `cpuid` and whose EPC is accounted in `stats`.
    pub fn new(cpuid: impl Fn(u32, u32) -> CpuidResult, stats: &EpcStats) -> Self {
        let sgx = cpuid(0x12, 0).eax;
        Self {
            sgx1: sgx & 1 != 0,
            sgx2: sgx & 2 != 0,
            flc: cpuid(7, 0).ecx & (1 << 30) != 0,
            kss: cpuid(0x12, 1).eax & (1 << 7) != 0,
            oversub: false,
            sections: stats
                .per_section
                .iter()
                .map(|s| SectionInfo { base: s.base, size: s.size, node: s.node })
                .collect(),
            epc_total_bytes: stats.total * PAGE,
            epc_free_bytes: stats.free * PAGE,
            epc_used_bytes: (stats.resident() + stats.hypervisor) * PAGE,
            epc_quarantined_bytes: stats.quarantined * PAGE,
        }
    }
}

/// One line of `vsgx sgxlist`: a guest's vEPC and where its pages are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SgxListEntry {
    /// The guest's name.
    pub name: String,
    /// Its domain id.
    pub domid: u32,
    /// Size of all its vEPC sections.
    pub epc_bytes: u64,
    /// Its EPC policy (`static`).
    pub policy: &'static str,
    /// Its vEPC sections, guest-physical.
    pub sections: Vec<SectionInfo>,
    /// vEPC pages backed by host EPC now.
    pub resident_pages: u64,
    /// vEPC pages the host evicted (oversubscription; 0 under `static`).
    pub evicted_pages: u64,
    /// vEPC pages ballooned out (0 under `static`).
    pub ballooned_pages: u64,
}

impl SgxListEntry {
    /// The entry for domain `id` created from `spec` under `policy`, counted in `stats` (a domain
    /// absent from `stats` has no pages in any state).
    pub fn new(id: DomainId, spec: &DomainSpec, policy: EpcPolicy, stats: &EpcStats) -> Self {
        let counts = stats.per_domain.get(&id).copied().unwrap_or_default();
        let DomainEpc { resident, evicted, ballooned } = counts;
        Self {
            name: spec.name.clone(),
            domid: id.0,
            epc_bytes: spec.epc.iter().map(|s| s.size).sum(),
            policy: policy.as_str(),
            sections: spec.epc.iter().map(SectionInfo::from).collect(),
            resident_pages: resident,
            evicted_pages: evicted,
            ballooned_pages: ballooned,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vsgx_hv::domain::Domain;
    use vsgx_hv::epc::EpcManager;
    use vsgx_hw::platform::Platform;

    use super::*;
    use crate::config::GuestConfig;
    use crate::host::HostInfo;

    const MIB: u64 = 1 << 20;

    fn host() -> (Arc<Platform>, Arc<EpcManager>) {
        let platform = Platform::new(vsgx_hw::config::embedded_default());
        let epc = Arc::new(EpcManager::new(Arc::clone(&platform)));
        (platform, epc)
    }

    fn domain(epc: &Arc<EpcManager>, id: u32, text: &str) -> (Domain, EpcPolicy) {
        let parsed = GuestConfig::parse("g.cfg", text, &HostInfo::from_platform(epc.platform())).unwrap();
        let domain = Domain::create(DomainId(id), parsed.layout.domain.clone(), Arc::clone(epc)).unwrap();
        (domain, parsed.config.epc_policy)
    }

    #[test]
    fn sgxinfo_of_the_embedded_host_and_after_a_guest_takes_epc() {
        let (platform, epc) = host();
        let cpuid = |leaf, sub| platform.cpuid(leaf, sub);
        let before = SgxInfo::new(cpuid, &epc.stats());
        assert!(before.sgx1 && before.sgx2 && before.flc && !before.oversub, "{before:?}");
        assert_eq!(before.sections.len(), 2);
        assert_eq!((before.sections[0].size, before.sections[0].node), (128 * MIB, 0));
        assert_eq!((before.sections[1].size, before.sections[1].node), (128 * MIB, 1));
        assert_eq!(before.epc_total_bytes, 256 * MIB);
        assert_eq!((before.epc_free_bytes, before.epc_used_bytes, before.epc_quarantined_bytes), (256 * MIB, 0, 0));

        let (web, _) = domain(&epc, 1, "name = 'web'\nepc = 64\n");
        let during = SgxInfo::new(cpuid, &epc.stats());
        assert_eq!((during.epc_free_bytes, during.epc_used_bytes), (192 * MIB, 64 * MIB));
        assert_eq!(
            during.epc_free_bytes + during.epc_used_bytes + during.epc_quarantined_bytes,
            during.epc_total_bytes
        );
        web.destroy().unwrap();
        assert_eq!(SgxInfo::new(cpuid, &epc.stats()), before);
    }

    #[test]
    fn kss_follows_cpuid() {
        let (_, epc) = host();
        let with = |eax1: u32| {
            SgxInfo::new(
                |leaf, sub| match (leaf, sub) {
                    (0x12, 1) => CpuidResult { eax: eax1, ebx: 0, ecx: 0, edx: 0 },
                    (0x12, 0) => CpuidResult { eax: 1, ebx: 0, ecx: 0, edx: 0 },
                    _ => CpuidResult::default(),
                },
                &epc.stats(),
            )
        };
        assert!(with(1 << 7).kss);
        let plain = with(0x36);
        assert!(!plain.kss && plain.sgx1 && !plain.sgx2 && !plain.flc, "{plain:?}");
    }

    #[test]
    fn sgxlist_entries_count_each_guests_pages() {
        let (_, epc) = host();
        let (numa, policy) = domain(&epc, 7, "name = 'numa'\nepc_sections = [ 'size=32,node=0', 'size=16,node=1' ]\n");
        let (small, _) = domain(&epc, 8, "name = 'small'\nepc = 8\n");
        let stats = epc.stats();
        let entry = SgxListEntry::new(DomainId(7), numa.spec(), policy, &stats);
        assert_eq!(entry.name, "numa");
        assert_eq!((entry.domid, entry.epc_bytes, entry.policy), (7, 48 * MIB, "static"));
        assert_eq!(entry.sections.iter().map(|s| (s.size, s.node)).collect::<Vec<_>>(), [(32 * MIB, 0), (16 * MIB, 1)]);
        assert_eq!(entry.sections[0].base, 0x1_0000_0000);
        assert_eq!((entry.resident_pages, entry.evicted_pages, entry.ballooned_pages), (48 * 256, 0, 0));
        let other = SgxListEntry::new(DomainId(8), small.spec(), policy, &stats);
        assert_eq!(other.resident_pages, 8 * 256);

        let json = serde_json::to_value(&entry).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        for key in
            ["name", "domid", "epc_bytes", "policy", "sections", "resident_pages", "evicted_pages", "ballooned_pages"]
        {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        let spec = small.spec().clone();
        numa.destroy().unwrap();
        small.destroy().unwrap();
        let gone = SgxListEntry::new(DomainId(8), &spec, policy, &epc.stats());
        assert_eq!((gone.resident_pages, gone.epc_bytes), (0, 8 * MIB));
    }
}
