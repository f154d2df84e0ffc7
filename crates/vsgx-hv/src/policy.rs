//! What a domain's processors report and allow: CPUID leaves 7 and 0x12 derived from the host's
//! capabilities ∩ the domain spec, and the launch-control MSR policy (DESIGN §5.3).

use vsgx_hw::platform::Capabilities;
use vsgx_isa::cpuid::{CpuidResult, EpcProperty, EpcSectionLeaf, Leaf7Sgx, SgxLeaf0, SgxLeaf1, SgxLeafSupport};
use vsgx_isa::msr::{FeatureControl, INTEL_LE_PUBKEY_HASH};
use vsgx_isa::{Attributes, AttributesFlags, Miscselect};

/// SGX features a domain asks for. Each must be offered by the host; `None` = as the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SgxFeatures {
    /// SGX2 leaves.
    pub sgx2: Option<bool>,
    /// Key Separation and Sharing.
    pub kss: Option<bool>,
    /// AEX-Notify.
    pub aexnotify: Option<bool>,
    /// MISCSELECT.EXINFO.
    pub exinfo: Option<bool>,
    /// Settable XFRM (must be a subset of the host's).
    pub xfrm_mask: Option<u64>,
}

/// Launch control of a domain: the initial hash MSRs and whether the guest may write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchControl {
    /// Initial IA32_SGXLEPUBKEYHASH0-3 (Intel's hash when not configured).
    pub lehash: [u8; 32],
    /// The guest may write the hash MSRs (FEATURE_CONTROL.SGX_LC reads as set).
    pub writable: bool,
}

impl Default for LaunchControl {
    fn default() -> Self {
        Self { lehash: INTEL_LE_PUBKEY_HASH, writable: true }
    }
}

/// A domain's vEPC section as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VepcSection {
    /// Guest-physical base (4 KiB aligned).
    pub gpa: u64,
    /// Size in bytes (whole MiB).
    pub size: u64,
    /// NUMA node the backing EPC should come from.
    pub node: u32,
}

/// A feature the domain asked for that the host does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the domain asks for {0}, which this host does not offer")]
pub struct Unsupported(pub String);

/// The guest-visible SGX enumeration of one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// Leaf 0x12 sub-leaf 0.
    pub leaf0: SgxLeaf0,
    /// Leaf 0x12 sub-leaf 1.
    pub leaf1: SgxLeaf1,
    /// CPUID.7.0:ECX[30] (the hash MSRs exist).
    pub sgx_lc: bool,
    /// vEPC sections (sub-leaves ≥ 2).
    pub sections: Vec<VepcSection>,
}

impl CpuidPolicy {
    /// Host capabilities ∩ the domain's request. Asking for more than the host has is an error;
    /// the oversubscription leaves (ENCLV, ENCLS-C) are the hypervisor's and never shown to guests.
    pub fn derive(host: &Capabilities, want: &SgxFeatures, sections: Vec<VepcSection>) -> Result<Self, Unsupported> {
        let pick = |name: &str, host_has: bool, want: Option<bool>| match want {
            Some(true) if !host_has => Err(Unsupported(name.to_string())),
            Some(w) => Ok(w),
            None => Ok(host_has),
        };
        let sgx2 = pick("SGX2", host.sgx2, want.sgx2)?;
        let kss = pick("KSS", host.kss(), want.kss)?;
        let aexnotify =
            pick("AEX-Notify", host.attributes.flags & AttributesFlags::AEXNOTIFY.bits() != 0, want.aexnotify)?;
        let exinfo = pick("MISCSELECT.EXINFO", host.miscselect & Miscselect::EXINFO.bits() != 0, want.exinfo)?;
        let xfrm = match want.xfrm_mask {
            Some(x) if x & !host.attributes.xfrm != 0 => {
                return Err(Unsupported(format!("XFRM {x:#x} (host allows {:#x})", host.attributes.xfrm)));
            }
            Some(x) => x,
            None => host.attributes.xfrm,
        };
        let mut leaves = SgxLeafSupport::SGX1;
        if sgx2 {
            leaves |= SgxLeafSupport::SGX2;
        }
        let mut flags = host.attributes.flags & !(AttributesFlags::KSS | AttributesFlags::AEXNOTIFY).bits();
        if kss {
            flags |= AttributesFlags::KSS.bits();
        }
        if aexnotify {
            flags |= AttributesFlags::AEXNOTIFY.bits();
        }
        Ok(Self {
            leaf0: SgxLeaf0 {
                leaves,
                miscselect: if exinfo { Miscselect::EXINFO.bits() } else { 0 },
                max_enclave_size_32: host.max_enclave_size_32,
                max_enclave_size_64: host.max_enclave_size_64,
            },
            leaf1: SgxLeaf1 { allowed: Attributes { flags, xfrm } },
            sgx_lc: host.flc,
            sections,
        })
    }

    /// Whether this enumeration differs from the host's (then ECREATE must be trapped and checked).
    pub fn differs_from(&self, host: &Capabilities) -> bool {
        let host_leaves = SgxLeafSupport::SGX1 | if host.sgx2 { SgxLeafSupport::SGX2 } else { SgxLeafSupport::empty() };
        self.leaf0.leaves != host_leaves
            || self.leaf0.miscselect != host.miscselect
            || self.leaf1.allowed != host.attributes
    }

    /// The guest's CPUID for leaves 7 and 0x12; other leaves come from `host_cpuid`.
    pub fn cpuid(&self, leaf: u32, subleaf: u32, host_cpuid: CpuidResult) -> CpuidResult {
        match (leaf, subleaf) {
            (7, 0) => Leaf7Sgx { sgx: true, sgx_lc: self.sgx_lc }.apply(host_cpuid),
            (0x12, 0) => self.leaf0.encode(),
            (0x12, 1) => self.leaf1.encode(),
            (0x12, n) if n >= 2 => self
                .sections
                .get((n - 2) as usize)
                .and_then(|s| {
                    EpcSectionLeaf { base: s.gpa, size: s.size, property: EpcProperty::ConfidentialityIntegrity }
                        .encode()
                        .ok()
                })
                .unwrap_or(EpcSectionLeaf::END),
            _ => host_cpuid,
        }
    }

    /// FEATURE_CONTROL as the guest's firmware leaves it: locked, SGX enabled, SGX_LC when the
    /// hash MSRs exist and the domain's launch control is writable.
    pub fn feature_control(&self, launch: &LaunchControl) -> u64 {
        let mut fc = FeatureControl::LOCK | FeatureControl::SGX_ENABLE;
        if self.sgx_lc && launch.writable {
            fc |= FeatureControl::SGX_LC;
        }
        fc.bits()
    }
}
