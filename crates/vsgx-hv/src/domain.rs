//! Domains: a guest's RAM, vEPC (backed through the p2m), CPUID/MSR policy and vCPUs
//! (DESIGN §5.2, §5.4 static policy, §5.5 reset and destroy).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vsgx_hw::platform::Platform;
use vsgx_isa::leaf::Encls;

use crate::epc::{DomainId, EpcError, EpcManager, Owner, Placement};
use crate::guest_ram::{GuestRam, RamError};
use crate::policy::{CpuidPolicy, LaunchControl, SgxFeatures, Unsupported, VepcSection};
use crate::vcpu::Vcpu;

/// Everything that defines a domain (what the toolstack hands the hypervisor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSpec {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: [u8; 16],
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM regions `(gpa, size)`.
    pub ram: Vec<(u64, u64)>,
    /// vEPC sections.
    pub epc: Vec<VepcSection>,
    /// SGX features asked for.
    pub features: SgxFeatures,
    /// Launch control.
    pub launch: LaunchControl,
    /// Whether enclaves may have ATTRIBUTES.PROVISIONKEY.
    pub provision: bool,
}

/// Why a domain could not be created.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The spec asks for something the host lacks.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// A vEPC section could not be backed (static policy).
    #[error("vEPC section {section} (GPA {gpa:#x}, {size} bytes, node {node}): {source}")]
    Epc {
        /// Index of the section in the spec.
        section: usize,
        /// Its GPA.
        gpa: u64,
        /// Its size.
        size: u64,
        /// Its node.
        node: u32,
        /// The EPC manager's answer (names how many pages are short).
        source: EpcError,
    },
    /// Guest RAM could not be created.
    #[error(transparent)]
    Ram(#[from] RamError),
    /// The spec is inconsistent.
    #[error("invalid domain spec: {0}")]
    Spec(String),
}

/// VM exits taken per ENCLS leaf.
#[derive(Debug, Default)]
pub struct ExitCounters([AtomicU64; 20]);

impl ExitCounters {
    /// Counts one exit.
    pub fn count(&self, leaf: Encls) {
        self.0[leaf as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Exits of `leaf` so far.
    pub fn get(&self, leaf: Encls) -> u64 {
        self.0[leaf as usize].load(Ordering::Relaxed)
    }
}

/// State shared by a domain's vCPUs.
#[derive(Debug)]
pub struct DomainShared {
    /// Domain id.
    pub id: DomainId,
    /// The platform.
    pub platform: Arc<Platform>,
    /// Guest RAM.
    pub ram: GuestRam,
    /// vEPC GPA page → host EPC page.
    pub p2m: P2m,
    /// CPUID policy.
    pub cpuid: CpuidPolicy,
    /// Launch control.
    pub launch: LaunchControl,
    /// PROVISIONKEY allowed.
    pub provision: bool,
    /// ECREATE exits (guest CPUID differs from the host's, or PROVISIONKEY is policed).
    pub trap_ecreate: bool,
    /// EINIT exits (the host has flexible launch control).
    pub trap_einit: bool,
    /// VM exits per leaf.
    pub exits: ExitCounters,
}

/// The EPC part of the p2m: per vEPC section, one entry per page holding the host EPC page
/// (0 = not backed, an EPT violation). Lock-free to read: vCPUs look it up on every EPC access.
#[derive(Debug)]
pub struct P2m {
    sections: Vec<(u64, Box<[AtomicU64]>)>,
}

impl P2m {
    fn new(sections: &[VepcSection]) -> Self {
        Self {
            sections: sections
                .iter()
                .map(|s| (s.gpa, (0..s.size / 4096).map(|_| AtomicU64::new(0)).collect()))
                .collect(),
        }
    }

    fn entry(&self, gpa: u64) -> Option<&AtomicU64> {
        self.sections.iter().find_map(|(base, pages)| {
            let index = gpa.checked_sub(*base)? / 4096;
            pages.get(usize::try_from(index).ok()?)
        })
    }

    /// The host page backing a vEPC GPA page, if backed.
    pub fn get(&self, gpa: u64) -> Option<u64> {
        self.entry(gpa).map(|e| e.load(Ordering::Acquire)).filter(|&hpa| hpa != 0)
    }

    /// Maps (or, with 0, unmaps) a vEPC GPA page. Returns false for a GPA outside the vEPC.
    pub fn set(&self, gpa: u64, hpa: u64) -> bool {
        self.entry(gpa).map(|e| e.store(hpa, Ordering::Release)).is_some()
    }
}

impl DomainShared {
    /// The host EPC page backing a guest-physical address, if it is in this domain's vEPC.
    pub fn epc_of(&self, gpa: u64) -> Option<u64> {
        self.p2m.get(gpa & !0xFFF).map(|hpa| hpa | (gpa & 0xFFF))
    }

    /// Whether a GPA lies in one of the vEPC sections.
    pub fn in_vepc(&self, gpa: u64) -> bool {
        self.cpuid.sections.iter().any(|s| gpa >= s.gpa && gpa - s.gpa < s.size)
    }
}

/// A guest VM.
#[derive(Debug)]
pub struct Domain {
    spec: DomainSpec,
    shared: Arc<DomainShared>,
    epc: Arc<EpcManager>,
    pages: Vec<u64>,
}

impl Domain {
    /// Creates a domain with every vEPC page backed now (static policy). On failure nothing is left
    /// allocated and the error names the section and how many pages were short.
    pub fn create(id: DomainId, spec: DomainSpec, epc: Arc<EpcManager>) -> Result<Self, DomainError> {
        if spec.vcpus == 0 {
            return Err(DomainError::Spec("a domain needs at least one vCPU".into()));
        }
        for (i, s) in spec.epc.iter().enumerate() {
            if s.gpa % 4096 != 0 || s.size == 0 || s.size % 4096 != 0 {
                return Err(DomainError::Spec(format!("vEPC section {i} is not page aligned or is empty")));
            }
        }
        let platform = Arc::clone(epc.platform());
        let host = *platform.capabilities();
        let cpuid = CpuidPolicy::derive(&host, &spec.features, spec.epc.clone())?;
        let ram = GuestRam::new(&spec.ram)?;
        let owner = Owner::Domain(id);
        let p2m = P2m::new(&spec.epc);
        let mut pages = Vec::new();
        for (i, s) in spec.epc.iter().enumerate() {
            match epc.alloc(owner, s.size / 4096, Placement { node: Some(s.node) }) {
                Ok(hpas) => {
                    for (n, hpa) in hpas.iter().enumerate() {
                        p2m.set(s.gpa + n as u64 * 4096, *hpa);
                    }
                    pages.extend(hpas);
                }
                Err(source) => {
                    // Fresh pages: releasing cannot fail short of a platform bug; report, never leak.
                    let _ = epc.release(owner, &pages);
                    return Err(DomainError::Epc { section: i, gpa: s.gpa, size: s.size, node: s.node, source });
                }
            }
        }
        let trap_ecreate = cpuid.differs_from(&host) || !spec.provision;
        let shared = Arc::new(DomainShared {
            id,
            platform,
            ram,
            p2m,
            cpuid,
            launch: spec.launch,
            provision: spec.provision,
            trap_ecreate,
            trap_einit: host.flc,
            exits: ExitCounters::default(),
        });
        Ok(Self { spec, shared, epc, pages })
    }

    /// The spec it was created from.
    pub fn spec(&self) -> &DomainSpec {
        &self.spec
    }

    /// State shared with vCPUs.
    pub fn shared(&self) -> &Arc<DomainShared> {
        &self.shared
    }

    /// vCPU `index` in its reset state.
    pub fn vcpu(&self, index: u32) -> Option<Vcpu> {
        (index < self.spec.vcpus).then(|| Vcpu::new(Arc::clone(&self.shared), index))
    }

    /// Host EPC pages backing the vEPC.
    pub fn epc_pages(&self) -> &[u64] {
        &self.pages
    }

    /// Guest reboot or S3: EREMOVE every vEPC page (two passes), keep the mapping (DESIGN §5.5).
    pub fn reset_epc(&self) -> Result<crate::epc::SanitizeReport, EpcError> {
        self.epc.sanitize(Owner::Domain(self.shared.id), &self.pages)
    }

    /// Destroys the domain, returning every EPC page.
    pub fn destroy(mut self) -> Result<crate::epc::ReleaseReport, EpcError> {
        let pages = std::mem::take(&mut self.pages);
        self.epc.release(Owner::Domain(self.shared.id), &pages)
    }
}

impl Drop for Domain {
    /// A domain dropped without [`Domain::destroy`] still returns its EPC (errors can only be
    /// reported by `destroy`; pages that cannot be removed are quarantined either way).
    fn drop(&mut self) {
        if !self.pages.is_empty() {
            let pages = std::mem::take(&mut self.pages);
            let _ = self.epc.release(Owner::Domain(self.shared.id), &pages);
        }
    }
}
