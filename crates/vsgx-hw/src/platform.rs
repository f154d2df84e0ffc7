//! The platform: EPC, RAM, fused secrets, counters and power events (SGX.md §8.4, §10).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use vsgx_isa::cpuid::{CpuidResult, Leaf7Sgx, SgxLeaf0, SgxLeaf1, SgxLeafSupport};
use vsgx_isa::{Attributes, AttributesFlags};

use crate::config::PlatformConfig;
use crate::crypto::PagingKey;
use crate::epc::Epc;
use crate::keys::PlatformKeys;
use crate::memory::Ram;

/// What the platform supports, read back from the CPUID it reports (so there is one source of
/// truth: the configuration's CPUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// SGX2 leaves.
    pub sgx2: bool,
    /// ENCLV leaves (CPUID.12H.0:EAX[5]).
    pub enclv: bool,
    /// ETRACKC/ERDINFO/ELDBC/ELDUC (CPUID.12H.0:EAX[6]).
    pub encls_c: bool,
    /// Flexible launch control: the hash MSRs exist (CPUID.7.0:ECX[30]).
    pub flc: bool,
    /// Supported MISCSELECT bits.
    pub miscselect: u32,
    /// Settable ATTRIBUTES (FLAGS and XFRM).
    pub attributes: Attributes,
    /// log2 of the maximum enclave size in 64-bit mode.
    pub max_enclave_size_64: u8,
    /// log2 of the maximum enclave size outside 64-bit mode.
    pub max_enclave_size_32: u8,
}

impl Capabilities {
    /// Reads capabilities out of CPUID leaves 7 and 0x12.
    pub fn from_cpuid(mut cpuid: impl FnMut(u32, u32) -> CpuidResult) -> Self {
        let leaf7 = Leaf7Sgx::decode(cpuid(7, 0));
        let l0 = SgxLeaf0::decode(cpuid(0x12, 0)).unwrap_or(SgxLeaf0 {
            leaves: SgxLeafSupport::SGX1,
            miscselect: 0,
            max_enclave_size_32: 31,
            max_enclave_size_64: 36,
        });
        let l1 = SgxLeaf1::decode(cpuid(0x12, 1));
        Self {
            sgx2: l0.leaves.contains(SgxLeafSupport::SGX2),
            enclv: l0.leaves.contains(SgxLeafSupport::ENCLV),
            encls_c: l0.leaves.contains(SgxLeafSupport::ENCLS_C),
            flc: leaf7.sgx_lc,
            miscselect: l0.miscselect,
            attributes: l1.allowed,
            max_enclave_size_64: l0.max_enclave_size_64,
            max_enclave_size_32: l0.max_enclave_size_32,
        }
    }

    /// KSS is supported (its attribute is settable).
    pub fn kss(&self) -> bool {
        self.attributes.flags & AttributesFlags::KSS.bits() != 0
    }
}

/// EPC pages by EPCM state (see [`Platform::census`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// All EPC pages.
    pub total: u64,
    /// Valid pages.
    pub valid: u64,
    /// Valid SECS pages.
    pub secs: u64,
    /// Valid REG/TCS/TRIM pages.
    pub children: u64,
    /// Valid VA pages.
    pub va: u64,
}

/// Where platform secrets come from: the OS RNG, or a seed (deterministic platforms for tests).
#[derive(Debug)]
enum SecretSource {
    Os,
    Seeded { seed: u64, counter: u64 },
}

impl SecretSource {
    fn fill(&mut self, label: &str, out: &mut [u8]) {
        match self {
            Self::Os => {
                if getrandom::fill(out).is_err() {
                    // No OS randomness at all: fall back to a hash of the time and label, which
                    // still differs per platform instance. Never silently reuse a constant.
                    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    let mut h = Sha256::new();
                    h.update(label.as_bytes());
                    h.update(t.as_nanos().to_le_bytes());
                    h.update((out.as_ptr() as usize).to_le_bytes());
                    let d = h.finalize();
                    for (o, b) in out.iter_mut().zip(d.iter().cycle()) {
                        *o = *b;
                    }
                }
            }
            Self::Seeded { seed, counter } => {
                for (i, chunk) in out.chunks_mut(32).enumerate() {
                    let mut h = Sha256::new();
                    h.update(b"vsgx platform secret\0");
                    h.update(seed.to_le_bytes());
                    h.update(label.as_bytes());
                    h.update(counter.to_le_bytes());
                    h.update((i as u64).to_le_bytes());
                    chunk.copy_from_slice(&h.finalize()[..chunk.len()]);
                }
                *counter += 1;
            }
        }
    }

    fn bytes<const N: usize>(&mut self, label: &str) -> [u8; N] {
        let mut out = [0u8; N];
        self.fill(label, &mut out);
        out
    }
}

/// One SGX platform: EPC + EPCM, RAM, fused secrets and the per-boot state.
///
/// Shared by all logical processors (`Arc<Platform>`); every method takes `&self`.
pub struct Platform {
    config: PlatformConfig,
    caps: Capabilities,
    epc: Epc,
    ram: Ram,
    keys: RwLock<PlatformKeys>,
    paging_key: RwLock<PagingKey>,
    secrets: Mutex<SecretSource>,
    next_eid: AtomicU64,
    next_ver: AtomicU64,
    power_epoch: AtomicU64,
    reset_epoch: AtomicU64,
    unmasked_events: AtomicU32,
    executor: crate::exec::Executor,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").field("caps", &self.caps).field("epc", &self.epc).finish_non_exhaustive()
    }
}

impl Platform {
    /// Powers on a platform described by `config`.
    pub fn new(config: PlatformConfig) -> Arc<Self> {
        let caps = Capabilities::from_cpuid(|l, s| config.cpuid(l, s));
        let sections: Vec<(u64, u64, u32)> = config.epc_layout().iter().map(|s| (s.base, s.size, s.node)).collect();
        let mut secrets = match config.seed {
            Some(seed) => SecretSource::Seeded { seed, counter: 0 },
            None => SecretSource::Os,
        };
        let keys = PlatformKeys {
            k_root: secrets.bytes("K_ROOT"),
            seal_fuses: secrets.bytes("CR_SEAL_FUSES"),
            owner_epoch: secrets.bytes("CR_SGXOWNEREPOCH"),
            cpusvn: config.cpusvn_bytes(),
            report_keyid: secrets.bytes("CR_REPORT_KEYID"),
        };
        let paging_key = PagingKey::new(&secrets.bytes("CR_BASE_PK"));
        Arc::new(Self {
            ram: Ram::new(config.memory_bytes()),
            epc: Epc::new(&sections),
            caps,
            config,
            keys: RwLock::new(keys),
            paging_key: RwLock::new(paging_key),
            secrets: Mutex::new(secrets),
            next_eid: AtomicU64::new(1),
            next_ver: AtomicU64::new(1),
            power_epoch: AtomicU64::new(0),
            reset_epoch: AtomicU64::new(0),
            unmasked_events: AtomicU32::new(0),
            executor: crate::exec::Executor::default(),
        })
    }

    /// The embedded default platform (two 128 MiB sections), with random fuses.
    pub fn embedded() -> Arc<Self> {
        Self::new(crate::config::embedded_default())
    }

    /// The configuration.
    pub fn config(&self) -> &PlatformConfig {
        &self.config
    }

    /// What the platform supports.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// CPUID as this platform's logical processors report it.
    pub fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.config.cpuid(leaf, subleaf)
    }

    /// The EPC.
    pub fn epc(&self) -> &Epc {
        &self.epc
    }

    /// Main memory (bare metal).
    pub fn ram(&self) -> &Ram {
        &self.ram
    }

    /// A copy of the fused and per-boot key material.
    pub fn keys(&self) -> PlatformKeys {
        self.keys.read().clone()
    }

    /// Runs `f` with the current paging key (CR_BASE_PK).
    pub fn with_paging_key<R>(&self, f: impl FnOnce(&PagingKey) -> R) -> R {
        f(&self.paging_key.read())
    }

    /// CR_NEXT_EID++.
    pub fn next_eid(&self) -> u64 {
        self.next_eid.fetch_add(1, Ordering::Relaxed)
    }

    /// CR_NEXT_VER++ (never 0).
    pub fn next_version(&self) -> u64 {
        self.next_ver.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of EPC-loss events so far; logical processors compare it to notice a loss.
    pub fn power_epoch(&self) -> u64 {
        self.power_epoch.load(Ordering::Acquire)
    }

    /// Test hook: the next `n` EINITs answer SGX_UNMASKED_EVENT after their signature check.
    pub fn inject_unmasked_events(&self, n: u32) {
        self.unmasked_events.store(n, Ordering::Release);
    }

    /// Consumes one injected unmasked event, if any.
    pub(crate) fn take_unmasked_event(&self) -> bool {
        self.unmasked_events.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    /// EPC loss (S3/S4, or a move to other hardware): every EPCM entry becomes invalid, EPC content
    /// is discarded and the paging key is rolled, so old EWB blobs can never be reloaded. Fused keys
    /// and CPUSVN stay.
    pub fn lose_epc(&self) {
        // Roll the key first: a blob written by an EWB racing with the loss is unloadable either way.
        let fresh = PagingKey::new(&self.secrets.lock().bytes("CR_BASE_PK"));
        *self.paging_key.write() = fresh;
        self.epc.for_each_allocated(|_, slot| {
            slot.epcm = crate::epc::Epcm::INVALID;
            slot.release();
        });
        self.executor.clear();
        self.power_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The enclave executor (compiled modules, calls suspended by AEX).
    pub fn executor(&self) -> &crate::exec::Executor {
        &self.executor
    }

    /// Counts EPC pages by EPCM state and checks the EPCM invariants: every valid child page
    /// belongs to a valid SECS, and every SECS's stored child count equals its valid children.
    /// Used by stress tests and by the hypervisor's accounting checks.
    pub fn census(&self) -> Result<Census, String> {
        use std::collections::HashMap;
        let mut census = Census { total: self.epc.total_pages() as u64, ..Census::default() };
        let mut secs_counts: HashMap<u32, u64> = HashMap::new();
        let mut children: HashMap<u32, u64> = HashMap::new();
        self.epc.for_each_allocated(|page, slot| {
            let e = slot.epcm;
            if !e.valid() {
                return;
            }
            census.valid += 1;
            match e.page_type() {
                vsgx_isa::PageType::Secs => {
                    census.secs += 1;
                    secs_counts.insert(page.0, crate::leaves::secs_child_count(slot.data()));
                }
                vsgx_isa::PageType::Va => census.va += 1,
                _ => *children.entry(e.secs().0).or_default() += 1,
            }
        });
        for (secs, n) in &children {
            match secs_counts.get(secs) {
                Some(stored) if stored == n => {}
                Some(stored) => return Err(format!("SECS page {secs}: child count {stored}, {n} valid children")),
                None => return Err(format!("{n} valid child pages belong to page {secs}, which is not a valid SECS")),
            }
        }
        if let Some((secs, stored)) = secs_counts.iter().find(|(s, n)| **n != 0 && !children.contains_key(s)) {
            return Err(format!("SECS page {secs}: child count {stored}, no valid children"));
        }
        census.children = children.values().sum();
        Ok(census)
    }

    /// A full power cycle: [`Self::lose_epc`] plus a new CR_REPORT_KEYID. Logical processors reset
    /// their MSRs when they observe the new power epoch.
    pub fn power_cycle(&self) {
        let keyid = self.secrets.lock().bytes("CR_REPORT_KEYID");
        self.keys.write().report_keyid = keyid;
        self.lose_epc();
        self.reset_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Number of power cycles so far; logical processors reset their MSRs when it changes.
    pub fn reset_epoch(&self) -> u64 {
        self.reset_epoch.load(Ordering::Acquire)
    }
}
