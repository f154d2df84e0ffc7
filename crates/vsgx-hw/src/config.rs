//! Platform configuration: what SGX hardware the model pretends to be (DESIGN §4), with an embedded
//! default and a TOML form, plus the CPUID and firmware MSR state it implies (SGX.md §9).
//!
//! The TOML form (every key optional; an absent key takes the [embedded default](EMBEDDED_DEFAULT_TOML)'s
//! value, so an empty document *is* the embedded default):
//!
//! ```toml
//! logical_processors = 4
//! memory_mib = 1024            # bare-metal main memory (RAM at physical 0)
//! seed = 42                    # deterministic fuses/keys (tests); absent = random per platform
//! cpusvn = "0102030405060708090a0b0c0d0e0f10"   # exactly 32 hex digits
//!
//! [features]                   # SGX1 is always on
//! sgx2 = true
//! flc = true                   # launch-control MSRs exist (CPUID.7.0:ECX[30])
//! lc_writable = true           # firmware leaves FEATURE_CONTROL.SGX_LC set; absent = same as flc
//! kss = true
//! aexnotify = true
//! enclv = true                 # CPUID.12H.0:EAX[5]
//! encls_c = true               # CPUID.12H.0:EAX[6]
//! exinfo = true                # MISCSELECT.EXINFO
//! max_enclave_size_64 = 36     # log2
//! max_enclave_size_32 = 31
//! xfrm_mask = "0x7"            # settable XFRM; a string "0x…" or an integer
//!
//! [[epc]]                      # 1 to 8 sections (an absent list = the default two)
//! size_mib = 128
//! node = 0                     # NUMA node, default 0
//! ```
//!
//! Deserializing a [`PlatformConfig`] always validates it, so a value that came from TOML is usable as
//! is. One built in code should go through [`PlatformConfig::validate`].

use serde::{Deserialize, Serialize};
use vsgx_isa::cpuid::{
    CpuidResult, EpcProperty, EpcSectionLeaf, FIRST_EPC_SUBLEAF, LEAF_FEATURES, LEAF_SGX, Leaf7Sgx, SgxLeaf0, SgxLeaf1,
    SgxLeafSupport,
};
use vsgx_isa::msr::FeatureControl;
use vsgx_isa::{Attributes, AttributesFlags, Miscselect, XFRM_LEGACY, xfrm_is_legal};

/// Host physical address of the first EPC section (**MODEL CHOICE**: DESIGN §4 leaves the bases to the
/// model; 256 GiB keeps every EPC section clear of any plausible bare-metal RAM).
pub const EPC_BASE: u64 = 0x40_0000_0000;
/// Each EPC section after the first starts at the next multiple of this after the previous one ends.
pub const EPC_SECTION_ALIGN: u64 = 1 << 30;
/// Most EPC sections a platform may have (Linux's limit, SGX.md §9.1).
pub const MAX_EPC_SECTIONS: usize = 8;
/// Cap on the total EPC, in MiB (1 TiB): far beyond real parts, small enough that every address stays
/// encodable in CPUID and nothing overflows.
pub const MAX_TOTAL_EPC_MIB: u64 = 1 << 20;
/// Most logical processors a platform may have.
pub const MAX_LOGICAL_PROCESSORS: u32 = 512;
/// Smallest and largest log2 maximum enclave size accepted for 64-bit enclaves.
pub const MAX_ENCLAVE_SIZE_64_RANGE: core::ops::RangeInclusive<u8> = 12..=63;
/// Smallest and largest log2 maximum enclave size accepted outside 64-bit mode (a 32-bit enclave
/// cannot exceed the 32-bit address space).
pub const MAX_ENCLAVE_SIZE_32_RANGE: core::ops::RangeInclusive<u8> = 12..=32;
/// CR_CPUSVN when the configuration names none (an arbitrary but realistic-looking value).
pub const DEFAULT_CPUSVN: [u8; 16] = [0x0f, 0x0f, 0x03, 0x05, 0xff, 0x80, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// ATTRIBUTES.FLAGS every platform lets ECREATE set: DEBUG, MODE64BIT, PROVISIONKEY, EINITTOKEN_KEY
/// (0x36, SGX.md §9.1). INIT is set only by EINIT and is not settable.
pub const BASE_ALLOWED_FLAGS: u64 = 0x36;

const MIB: u64 = 1 << 20;

/// The embedded default platform as TOML; [`embedded_default`] is the same value.
pub const EMBEDDED_DEFAULT_TOML: &str = r#"# vsgx embedded default platform: SGX1 + SGX2, FLC with writable hash MSRs, KSS, AEX-Notify,
# ENCLV and the ENCLS-C leaves, MISCSELECT.EXINFO, two 128 MiB EPC sections on NUMA nodes 0 and 1.
logical_processors = 4
memory_mib = 1024            # bare-metal main memory (RAM at physical 0)
# seed = 42                  # deterministic fuses/keys (tests); absent = random per platform
cpusvn = "0f0f0305ff8007000000000000000000"

[features]
sgx2 = true
flc = true                   # launch-control MSRs exist (CPUID.7.0:ECX[30])
lc_writable = true           # firmware leaves FEATURE_CONTROL.SGX_LC set (false = "locked" LC mode)
kss = true
aexnotify = true
enclv = true                 # CPUID.12H.0:EAX[5]
encls_c = true               # CPUID.12H.0:EAX[6]
exinfo = true                # MISCSELECT.EXINFO supported
max_enclave_size_64 = 36     # log2
max_enclave_size_32 = 31
xfrm_mask = "0x7"            # settable XFRM: x87 | SSE | AVX (add 0xE0 for AVX-512)

[[epc]]
size_mib = 128
node = 0

[[epc]]
size_mib = 128
node = 1
"#;

/// A platform configuration that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML is malformed, has an unknown key or a value of the wrong type (the message carries
    /// toml's line and column).
    #[error("platform configuration: {0}")]
    Toml(#[from] toml::de::Error),
    /// The `epc` list is empty.
    #[error("no EPC sections: an SGX platform needs at least one [[epc]] section")]
    NoEpcSections,
    /// More EPC sections than [`MAX_EPC_SECTIONS`].
    #[error("{count} EPC sections: at most {max} are supported (Linux's limit)")]
    TooManyEpcSections {
        /// Sections configured.
        count: usize,
        /// [`MAX_EPC_SECTIONS`].
        max: usize,
    },
    /// An EPC section of size 0.
    #[error("epc[{index}]: size_mib must not be 0")]
    EmptyEpcSection {
        /// Index of the section in the `epc` list.
        index: usize,
    },
    /// The sections add up to more than [`MAX_TOTAL_EPC_MIB`].
    #[error("total EPC of {total_mib} MiB (through epc[{index}]) exceeds the cap of {max_mib} MiB")]
    EpcTooLarge {
        /// Index of the section that crossed the cap.
        index: usize,
        /// Total up to and including that section (saturating).
        total_mib: u64,
        /// [`MAX_TOTAL_EPC_MIB`].
        max_mib: u64,
    },
    /// `logical_processors` is 0 or above [`MAX_LOGICAL_PROCESSORS`].
    #[error("logical_processors = {value}: must be 1..={max}")]
    LogicalProcessors {
        /// Configured value.
        value: u32,
        /// [`MAX_LOGICAL_PROCESSORS`].
        max: u32,
    },
    /// `memory_mib` is 0.
    #[error("memory_mib must not be 0")]
    NoMemory,
    /// Main memory (at physical 0) would reach into the EPC at [`EPC_BASE`].
    #[error("memory_mib = {memory_mib}: main memory at physical 0 would overlap the EPC at {epc_base:#x}")]
    MemoryOverlapsEpc {
        /// Configured value.
        memory_mib: u64,
        /// [`EPC_BASE`].
        epc_base: u64,
    },
    /// `cpusvn` is not exactly 32 hex digits.
    #[error("cpusvn = {value:?}: expected exactly 32 hex digits")]
    Cpusvn {
        /// The configured text.
        value: String,
    },
    /// `features.xfrm_mask` is not a number or not an XFRM a platform could offer.
    #[error("features.xfrm_mask = {value}: {reason}")]
    XfrmMask {
        /// The configured value as written (or in hex).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A log2 maximum enclave size outside its range.
    #[error("features.{field} = {value}: must be in {min}..={max}")]
    MaxEnclaveSize {
        /// `max_enclave_size_64` or `max_enclave_size_32`.
        field: &'static str,
        /// Configured value.
        value: u8,
        /// Smallest accepted value.
        min: u8,
        /// Largest accepted value.
        max: u8,
    },
    /// A feature switched on without one it depends on.
    #[error("features.{feature} = true requires features.{requires} = true")]
    FeatureRequires {
        /// The feature that is on.
        feature: &'static str,
        /// The feature it needs.
        requires: &'static str,
    },
    /// toml's serializer refused the configuration (not expected for any value; kept so that
    /// [`PlatformConfig::to_toml`] need not panic).
    #[error("platform configuration cannot be written as TOML: {0}")]
    Serialize(String),
}

/// Feature switches and enumerated limits (CPUID.7.0 and 12H, FEATURE_CONTROL). SGX1 is always on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// SGX2 leaves (`CPUID.12H.0:EAX[1]`).
    pub sgx2: bool,
    /// Flexible launch control: the LE hash MSRs exist (`CPUID.7.0:ECX[30]`).
    pub flc: bool,
    /// Firmware leaves FEATURE_CONTROL.SGX_LC set, so the hash MSRs are writable. Needs `flc`.
    pub lc_writable: bool,
    /// Key Separation and Sharing (ATTRIBUTES bit 7 settable).
    pub kss: bool,
    /// AEX-Notify (ATTRIBUTES bit 10 settable).
    pub aexnotify: bool,
    /// ENCLV leaves (`CPUID.12H.0:EAX[5]`).
    pub enclv: bool,
    /// ETRACKC, ERDINFO, ELDBC, ELDUC (`CPUID.12H.0:EAX[6]`).
    pub encls_c: bool,
    /// MISCSELECT.EXINFO supported (`CPUID.12H.0:EBX[0]`).
    pub exinfo: bool,
    /// log2 of the maximum enclave size in 64-bit mode (`CPUID.12H.0:EDX[15:8]`).
    pub max_enclave_size_64: u8,
    /// log2 of the maximum enclave size outside 64-bit mode (`CPUID.12H.0:EDX[7:0]`).
    pub max_enclave_size_32: u8,
    /// Settable XFRM bits (CPUID.12H.1:ECX/EDX), in XCR0 layout.
    pub xfrm_mask: u64,
}

impl Features {
    /// The embedded default: everything on, EDX = 0x241F, XFRM x87 | SSE | AVX.
    pub const EMBEDDED: Self = Self {
        sgx2: true,
        flc: true,
        lc_writable: true,
        kss: true,
        aexnotify: true,
        enclv: true,
        encls_c: true,
        exinfo: true,
        max_enclave_size_64: 36,
        max_enclave_size_32: 31,
        xfrm_mask: 0x7,
    };
}

impl Default for Features {
    fn default() -> Self {
        Self::EMBEDDED
    }
}

/// One EPC section as configured: its size and NUMA node. The model chooses its base (see
/// [`PlatformConfig::epc_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpcSection {
    /// Size in MiB.
    pub size_mib: u64,
    /// NUMA node the section belongs to.
    #[serde(default)]
    pub node: u32,
}

/// Where an EPC section sits in host physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpcSectionLayout {
    /// Host physical base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// NUMA node.
    pub node: u32,
}

/// The platform configuration (see the [module documentation](self) for the TOML form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPlatformConfig", into = "RawPlatformConfig")]
pub struct PlatformConfig {
    /// Number of logical processors (1..=512).
    pub logical_processors: u32,
    /// Bare-metal main memory in MiB, mapped at physical 0.
    pub memory_mib: u64,
    /// Seed for deterministic fuses and per-boot secrets; `None` = random per platform.
    pub seed: Option<u64>,
    /// CR_CPUSVN.
    pub cpusvn: [u8; 16],
    /// Feature switches and limits.
    pub features: Features,
    /// EPC sections, in enumeration order.
    pub epc: Vec<EpcSection>,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        embedded_default()
    }
}

/// The embedded default platform (the value of [`EMBEDDED_DEFAULT_TOML`]).
pub fn embedded_default() -> PlatformConfig {
    PlatformConfig {
        logical_processors: 4,
        memory_mib: 1024,
        seed: None,
        cpusvn: DEFAULT_CPUSVN,
        features: Features::EMBEDDED,
        epc: vec![EpcSection { size_mib: 128, node: 0 }, EpcSection { size_mib: 128, node: 1 }],
    }
}

/// Parses and validates a TOML platform configuration.
pub fn from_toml(text: &str) -> Result<PlatformConfig, ConfigError> {
    let raw: RawPlatformConfig = toml::from_str(text)?;
    PlatformConfig::try_from(raw)
}

impl PlatformConfig {
    /// Parses and validates a TOML platform configuration (same as [`from_toml`]).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        from_toml(text)
    }

    /// The configuration as TOML that [`from_toml`] reads back to an equal value.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))
    }

    /// Checks every rule a TOML configuration must satisfy; the first violation is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.epc.is_empty() {
            return Err(ConfigError::NoEpcSections);
        }
        if self.epc.len() > MAX_EPC_SECTIONS {
            return Err(ConfigError::TooManyEpcSections { count: self.epc.len(), max: MAX_EPC_SECTIONS });
        }
        let mut total_mib = 0u64;
        for (index, section) in self.epc.iter().enumerate() {
            if section.size_mib == 0 {
                return Err(ConfigError::EmptyEpcSection { index });
            }
            total_mib = total_mib.saturating_add(section.size_mib);
            if total_mib > MAX_TOTAL_EPC_MIB {
                return Err(ConfigError::EpcTooLarge { index, total_mib, max_mib: MAX_TOTAL_EPC_MIB });
            }
        }
        if self.logical_processors == 0 || self.logical_processors > MAX_LOGICAL_PROCESSORS {
            return Err(ConfigError::LogicalProcessors { value: self.logical_processors, max: MAX_LOGICAL_PROCESSORS });
        }
        if self.memory_mib == 0 {
            return Err(ConfigError::NoMemory);
        }
        if self.memory_mib > EPC_BASE / MIB {
            return Err(ConfigError::MemoryOverlapsEpc { memory_mib: self.memory_mib, epc_base: EPC_BASE });
        }
        let f = &self.features;
        let xfrm_error = |reason| ConfigError::XfrmMask { value: format!("{:#x}", f.xfrm_mask), reason };
        if f.xfrm_mask & XFRM_LEGACY != XFRM_LEGACY {
            return Err(xfrm_error("must include x87 and SSE (0x3), which every enclave needs"));
        }
        if !xfrm_is_legal(f.xfrm_mask) {
            return Err(xfrm_error("not a value XSETBV would accept (SGX.md §1.2)"));
        }
        for (field, value, range) in [
            ("max_enclave_size_64", f.max_enclave_size_64, MAX_ENCLAVE_SIZE_64_RANGE),
            ("max_enclave_size_32", f.max_enclave_size_32, MAX_ENCLAVE_SIZE_32_RANGE),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::MaxEnclaveSize { field, value, min: *range.start(), max: *range.end() });
            }
        }
        if f.lc_writable && !f.flc {
            return Err(ConfigError::FeatureRequires { feature: "lc_writable", requires: "flc" });
        }
        Ok(())
    }

    /// CR_CPUSVN.
    pub fn cpusvn_bytes(&self) -> [u8; 16] {
        self.cpusvn
    }

    /// Main memory size in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(MIB)
    }

    /// Total EPC in bytes.
    pub fn total_epc_bytes(&self) -> u64 {
        self.epc.iter().fold(0u64, |t, s| t.saturating_add(s.size_mib.saturating_mul(MIB)))
    }

    /// Host physical placement of the EPC sections (**MODEL CHOICE**): the first at [`EPC_BASE`], each
    /// next one at the first 1 GiB boundary ([`EPC_SECTION_ALIGN`]) at or after the end of the
    /// previous one. Two 128 MiB sections thus sit at 0x40_0000_0000 and 0x40_4000_0000.
    pub fn epc_layout(&self) -> Vec<EpcSectionLayout> {
        self.epc_layout_iter().collect()
    }

    fn epc_layout_iter(&self) -> impl Iterator<Item = EpcSectionLayout> + '_ {
        let mut base = EPC_BASE;
        self.epc.iter().map(move |s| {
            let size = s.size_mib.saturating_mul(MIB);
            let layout = EpcSectionLayout { base, size, node: s.node };
            base = base
                .saturating_add(size)
                .checked_next_multiple_of(EPC_SECTION_ALIGN)
                .unwrap_or(!(EPC_SECTION_ALIGN - 1));
            layout
        })
    }

    /// SGX leaf groups enumerated in CPUID.12H.0:EAX.
    pub fn leaf_support(&self) -> SgxLeafSupport {
        let f = &self.features;
        let mut leaves = SgxLeafSupport::SGX1;
        leaves.set(SgxLeafSupport::SGX2, f.sgx2);
        leaves.set(SgxLeafSupport::ENCLV, f.enclv);
        leaves.set(SgxLeafSupport::ENCLS_C, f.encls_c);
        leaves
    }

    /// Supported MISCSELECT bits (CPUID.12H.0:EBX).
    pub fn supported_miscselect(&self) -> u32 {
        if self.features.exinfo { Miscselect::EXINFO.bits() } else { 0 }
    }

    /// ATTRIBUTES ECREATE may set (CPUID.12H.1): 0x36, plus KSS and AEXNOTIFY when enabled; XFRM =
    /// `xfrm_mask`.
    pub fn allowed_attributes(&self) -> Attributes {
        let f = &self.features;
        let mut flags = BASE_ALLOWED_FLAGS;
        if f.kss {
            flags |= AttributesFlags::KSS.bits();
        }
        if f.aexnotify {
            flags |= AttributesFlags::AEXNOTIFY.bits();
        }
        Attributes { flags, xfrm: f.xfrm_mask }
    }

    /// CPUID as the platform's logical processors report it: leaf 0 (max basic leaf 0x12,
    /// "GenuineIntel"), leaf 7.0 (SGX, SGX_LC), leaf 0x12 sub-leaves 0, 1 and the EPC sections from 2 on
    /// (type 0 after the last). Every other leaf reads as zeros.
    pub fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        const VENDOR: CpuidResult = CpuidResult {
            eax: LEAF_SGX,
            ebx: u32::from_le_bytes(*b"Genu"),
            ecx: u32::from_le_bytes(*b"ntel"),
            edx: u32::from_le_bytes(*b"ineI"),
        };
        let f = &self.features;
        match (leaf, subleaf) {
            (0, _) => VENDOR,
            (LEAF_FEATURES, 0) => Leaf7Sgx { sgx: true, sgx_lc: f.flc }.apply(CpuidResult::default()),
            (LEAF_SGX, 0) => SgxLeaf0 {
                leaves: self.leaf_support(),
                miscselect: self.supported_miscselect(),
                max_enclave_size_32: f.max_enclave_size_32,
                max_enclave_size_64: f.max_enclave_size_64,
            }
            .encode(),
            (LEAF_SGX, 1) => SgxLeaf1 { allowed: self.allowed_attributes() }.encode(),
            (LEAF_SGX, n) if n >= FIRST_EPC_SUBLEAF => {
                let index = (n - FIRST_EPC_SUBLEAF) as usize;
                self.epc_layout_iter()
                    .nth(index)
                    .and_then(|s| {
                        // Cannot fail for a validated configuration; an unencodable section of an
                        // unvalidated one ends the enumeration rather than panicking.
                        EpcSectionLeaf { base: s.base, size: s.size, property: EpcProperty::ConfidentialityIntegrity }
                            .encode()
                            .ok()
                    })
                    .unwrap_or(EpcSectionLeaf::END)
            }
            _ => CpuidResult::default(),
        }
    }

    /// IA32_FEATURE_CONTROL as firmware leaves it at reset: LOCK | SGX_ENABLE, plus SGX_LC when the
    /// hash MSRs are writable (0x60001 for the embedded default, 0x40001 in "locked" LC mode).
    pub fn feature_control_reset_value(&self) -> u64 {
        let mut fc = FeatureControl::LOCK | FeatureControl::SGX_ENABLE;
        fc.set(FeatureControl::SGX_LC, self.features.flc && self.features.lc_writable);
        fc.bits()
    }
}

impl TryFrom<RawPlatformConfig> for PlatformConfig {
    type Error = ConfigError;

    fn try_from(raw: RawPlatformConfig) -> Result<Self, ConfigError> {
        let cpusvn = parse_cpusvn(&raw.cpusvn).ok_or_else(|| ConfigError::Cpusvn { value: raw.cpusvn.clone() })?;
        let rf = raw.features;
        let xfrm_mask = rf.xfrm_mask.value().ok_or_else(|| ConfigError::XfrmMask {
            value: rf.xfrm_mask.to_string(),
            reason: "not a number (write a hex string such as \"0x7\" or an integer)",
        })?;
        let config = Self {
            logical_processors: raw.logical_processors,
            memory_mib: raw.memory_mib,
            seed: raw.seed,
            cpusvn,
            features: Features {
                sgx2: rf.sgx2,
                flc: rf.flc,
                lc_writable: rf.lc_writable.unwrap_or(rf.flc),
                kss: rf.kss,
                aexnotify: rf.aexnotify,
                enclv: rf.enclv,
                encls_c: rf.encls_c,
                exinfo: rf.exinfo,
                max_enclave_size_64: rf.max_enclave_size_64,
                max_enclave_size_32: rf.max_enclave_size_32,
                xfrm_mask,
            },
            epc: raw.epc,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The TOML shape of [`PlatformConfig`]: hex fields as text, every key optional.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPlatformConfig {
    logical_processors: u32,
    memory_mib: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    cpusvn: String,
    features: RawFeatures,
    epc: Vec<EpcSection>,
}

impl Default for RawPlatformConfig {
    fn default() -> Self {
        embedded_default().into()
    }
}

impl From<PlatformConfig> for RawPlatformConfig {
    fn from(c: PlatformConfig) -> Self {
        let f = c.features;
        Self {
            logical_processors: c.logical_processors,
            memory_mib: c.memory_mib,
            seed: c.seed,
            cpusvn: c.cpusvn.iter().map(|b| format!("{b:02x}")).collect(),
            features: RawFeatures {
                sgx2: f.sgx2,
                flc: f.flc,
                lc_writable: Some(f.lc_writable),
                kss: f.kss,
                aexnotify: f.aexnotify,
                enclv: f.enclv,
                encls_c: f.encls_c,
                exinfo: f.exinfo,
                max_enclave_size_64: f.max_enclave_size_64,
                max_enclave_size_32: f.max_enclave_size_32,
                xfrm_mask: XfrmText::Text(format!("{:#x}", f.xfrm_mask)),
            },
            epc: c.epc,
        }
    }
}

/// The TOML shape of [`Features`]; `lc_writable` absent means "same as `flc`", so `flc = false` alone
/// describes a consistent platform.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFeatures {
    sgx2: bool,
    flc: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    lc_writable: Option<bool>,
    kss: bool,
    aexnotify: bool,
    enclv: bool,
    encls_c: bool,
    exinfo: bool,
    max_enclave_size_64: u8,
    max_enclave_size_32: u8,
    xfrm_mask: XfrmText,
}

impl Default for RawFeatures {
    fn default() -> Self {
        let mut raw = RawPlatformConfig::from(embedded_default()).features;
        raw.lc_writable = None;
        raw
    }
}

/// An XFRM mask as written: an integer or a string ("0x…" hex or decimal).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum XfrmText {
    Int(u64),
    Text(String),
}

impl XfrmText {
    fn value(&self) -> Option<u64> {
        match self {
            Self::Int(v) => Some(*v),
            Self::Text(s) => {
                let s = s.trim();
                match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
                    None => s.replace('_', "").parse().ok(),
                }
            }
        }
    }
}

impl core::fmt::Display for XfrmText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v:#x}"),
            Self::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// Exactly 32 hex digits → 16 bytes, in the order written.
fn parse_cpusvn(text: &str) -> Option<[u8; 16]> {
    let digits = text.as_bytes();
    if digits.len() != 32 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PlatformConfig, ConfigError> {
        from_toml(text)
    }

    fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn embedded_default_toml_is_the_embedded_default() {
        assert_eq!(parse(EMBEDDED_DEFAULT_TOML), Ok(embedded_default()));
        assert_eq!(parse(""), Ok(embedded_default()), "every key defaults to the embedded value");
        assert_eq!(embedded_default().validate(), Ok(()));
        assert_eq!(PlatformConfig::default(), embedded_default());
    }

    #[test]
    fn brief_example_parses() {
        let c = parse(
            r#"
            logical_processors = 4
            memory_mib = 1024
            seed = 42
            cpusvn = "0102030405060708090a0b0c0d0e0f10"
            [features]
            sgx2 = true
            flc = true
            lc_writable = true
            kss = true
            aexnotify = true
            enclv = true
            encls_c = true
            exinfo = true
            max_enclave_size_64 = 36
            max_enclave_size_32 = 31
            xfrm_mask = "0xE7"
            [[epc]]
            size_mib = 128
            node = 0
            [[epc]]
            size_mib = 128
            node = 1
            "#,
        )
        .expect("valid");
        assert_eq!(c.seed, Some(42));
        assert_eq!(c.cpusvn_bytes(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(c.features.xfrm_mask, 0xE7);
        assert_eq!(c.cpuid(0x12, 1).ecx, 0xE7);
    }

    #[test]
    fn round_trips_through_toml() {
        let mut c = embedded_default();
        c.seed = Some(7);
        c.features.kss = false;
        c.features.xfrm_mask = 0x2_00E7 | 0x4_0000;
        c.epc.push(EpcSection { size_mib: 4096, node: 3 });
        let text = c.to_toml().expect("serializable");
        assert_eq!(parse(&text), Ok(c), "{text}");
        let big_seed = PlatformConfig { seed: Some(u64::MAX), ..embedded_default() };
        assert_eq!(parse(&big_seed.to_toml().expect("serializable")), Ok(big_seed), "u64 seeds survive");
    }

    #[test]
    fn embedded_cpuid() {
        let c = embedded_default();
        assert_eq!(c.cpuid(0x12, 0).to_array(), [0x63, 1, 0, 0x241F]);
        let l1 = c.cpuid(0x12, 1);
        assert_eq!(l1.to_array(), [0x4B6, 0, 0x7, 0]);
        let s2 = EpcSectionLeaf::decode(2, c.cpuid(0x12, 2)).expect("well formed").expect("a section");
        let s3 = EpcSectionLeaf::decode(3, c.cpuid(0x12, 3)).expect("well formed").expect("a section");
        assert_eq!((s2.base, s2.size), (0x40_0000_0000, 128 << 20));
        assert_eq!((s3.base, s3.size), (0x40_4000_0000, 128 << 20));
        assert_eq!(s2.property, EpcProperty::ConfidentialityIntegrity);
        assert_eq!(EpcSectionLeaf::decode(4, c.cpuid(0x12, 4)), Ok(None));
        assert_eq!(c.cpuid(0x12, u32::MAX), EpcSectionLeaf::END);

        let vendor = c.cpuid(0, 0);
        assert_eq!(vendor.eax, 0x12);
        let mut name = Vec::new();
        for r in [vendor.ebx, vendor.edx, vendor.ecx] {
            name.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(name, b"GenuineIntel");

        assert_eq!(Leaf7Sgx::decode(c.cpuid(7, 0)), Leaf7Sgx { sgx: true, sgx_lc: true });
        assert_eq!(c.cpuid(7, 1), CpuidResult::default());
        assert_eq!(c.cpuid(1, 0), CpuidResult::default());
        assert_eq!(c.cpuid(0x8000_0000, 0), CpuidResult::default());
        assert_eq!(c.feature_control_reset_value(), 0x60001);
        assert_eq!(c.epc_layout()[1], EpcSectionLayout { base: 0x40_4000_0000, size: 128 << 20, node: 1 });
    }

    #[test]
    fn minimal_platform_cpuid() {
        let c = parse(
            r#"
            [features]
            sgx2 = false
            flc = false
            kss = false
            aexnotify = false
            enclv = false
            encls_c = false
            exinfo = false
            xfrm_mask = 3
            "#,
        )
        .expect("flc = false alone implies lc_writable = false");
        assert!(!c.features.lc_writable);
        assert_eq!(c.cpuid(0x12, 0).to_array(), [0x1, 0, 0, 0x241F]);
        assert_eq!(c.cpuid(0x12, 1).to_array(), [0x36, 0, 0x3, 0]);
        assert_eq!(Leaf7Sgx::decode(c.cpuid(7, 0)), Leaf7Sgx { sgx: true, sgx_lc: false });
        assert_eq!(c.feature_control_reset_value(), 0x40001);

        let locked = parse("[features]\nlc_writable = false\n").expect("valid");
        assert!(Leaf7Sgx::decode(locked.cpuid(7, 0)).sgx_lc);
        assert_eq!(locked.feature_control_reset_value(), 0x40001);
    }

    #[test]
    fn large_sections() {
        let c = parse("[[epc]]\nsize_mib = 65536\n[[epc]]\nsize_mib = 100\nnode = 2\n[[epc]]\nsize_mib = 1\n")
            .expect("a 64 GiB section is fine");
        let layout = c.epc_layout();
        assert_eq!(layout[0], EpcSectionLayout { base: 0x40_0000_0000, size: 64 << 30, node: 0 });
        assert_eq!(layout[1], EpcSectionLayout { base: 0x50_0000_0000, size: 100 << 20, node: 2 });
        assert_eq!(layout[2].base, 0x50_4000_0000);
        assert_eq!(c.cpuid(0x12, 2).to_array(), [0x0000_0001, 0x40, 0x0000_0001, 0x10]);
        for (i, s) in layout.iter().enumerate() {
            let leaf = EpcSectionLeaf::decode(2 + i as u32, c.cpuid(0x12, 2 + i as u32)).expect("ok").expect("section");
            assert_eq!((leaf.base, leaf.size), (s.base, s.size));
            assert_eq!(s.base % EPC_SECTION_ALIGN, 0);
        }
        assert_eq!(c.total_epc_bytes(), (65536 + 100 + 1) << 20);
    }

    #[test]
    fn validation_errors() {
        assert_eq!(err("epc = []"), ConfigError::NoEpcSections);
        let nine = "[[epc]]\nsize_mib = 1\n".repeat(9);
        assert_eq!(err(&nine), ConfigError::TooManyEpcSections { count: 9, max: 8 });
        assert!(parse(&"[[epc]]\nsize_mib = 1\n".repeat(8)).is_ok());
        assert_eq!(err("[[epc]]\nsize_mib = 1\n[[epc]]\nsize_mib = 0\n"), ConfigError::EmptyEpcSection { index: 1 });
        assert_eq!(
            err("[[epc]]\nsize_mib = 1048576\n[[epc]]\nsize_mib = 1\n"),
            ConfigError::EpcTooLarge { index: 1, total_mib: 1048577, max_mib: MAX_TOTAL_EPC_MIB }
        );
        assert_eq!(
            err("[[epc]]\nsize_mib = 9223372036854775807\n[[epc]]\nsize_mib = 9223372036854775807\n"),
            ConfigError::EpcTooLarge { index: 0, total_mib: i64::MAX as u64, max_mib: MAX_TOTAL_EPC_MIB }
        );
        assert_eq!(err("logical_processors = 0"), ConfigError::LogicalProcessors { value: 0, max: 512 });
        assert_eq!(err("logical_processors = 513"), ConfigError::LogicalProcessors { value: 513, max: 512 });
        assert!(parse("logical_processors = 512").is_ok());
        assert_eq!(err("memory_mib = 0"), ConfigError::NoMemory);
        assert!(matches!(err("memory_mib = 262145"), ConfigError::MemoryOverlapsEpc { memory_mib: 262145, .. }));
        assert!(parse("memory_mib = 262144").is_ok());

        for bad in [
            "",
            "00",
            "0102030405060708090a0b0c0d0e0f",
            "0102030405060708090a0b0c0d0e0f1011",
            "zz02030405060708090a0b0c0d0e0f10",
        ] {
            assert_eq!(err(&format!("cpusvn = \"{bad}\"")), ConfigError::Cpusvn { value: bad.to_string() }, "{bad:?}");
        }
        assert!(parse("cpusvn = \"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\"").is_ok());

        let xfrm = |v: &str| err(&format!("[features]\nxfrm_mask = {v}\n"));
        assert!(matches!(xfrm("\"seven\""), ConfigError::XfrmMask { .. }));
        assert!(matches!(xfrm("\"0x\""), ConfigError::XfrmMask { .. }));
        assert!(matches!(xfrm("\"0x5\""), ConfigError::XfrmMask { reason, .. } if reason.contains("x87 and SSE")));
        assert!(matches!(xfrm("\"0x23\""), ConfigError::XfrmMask { reason, .. } if reason.contains("XSETBV")));
        assert!(matches!(xfrm("0xB"), ConfigError::XfrmMask { reason, .. } if reason.contains("XSETBV")));
        assert!(parse("[features]\nxfrm_mask = \"0xe7\"\n").is_ok());
        assert!(parse("[features]\nxfrm_mask = \"231\"\n").is_ok());

        assert_eq!(
            err("[features]\nmax_enclave_size_64 = 64\n"),
            ConfigError::MaxEnclaveSize { field: "max_enclave_size_64", value: 64, min: 12, max: 63 }
        );
        assert_eq!(
            err("[features]\nmax_enclave_size_64 = 11\n"),
            ConfigError::MaxEnclaveSize { field: "max_enclave_size_64", value: 11, min: 12, max: 63 }
        );
        assert_eq!(
            err("[features]\nmax_enclave_size_32 = 33\n"),
            ConfigError::MaxEnclaveSize { field: "max_enclave_size_32", value: 33, min: 12, max: 32 }
        );
        assert_eq!(
            err("[features]\nflc = false\nlc_writable = true\n"),
            ConfigError::FeatureRequires { feature: "lc_writable", requires: "flc" }
        );
    }

    #[test]
    fn toml_errors_carry_position_and_names() {
        let e = err("logical_processors = 4\nmemory_mib = = 3\n");
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Toml(_)));
        assert!(msg.contains("line 2"), "{msg}");

        for (text, name) in [
            ("bogus_key = 1\n", "bogus_key"),
            ("[features]\nsgx3 = true\n", "sgx3"),
            ("[features]\nsgx1 = true\n", "sgx1"),
            ("[[epc]]\nsize_mib = 1\nbase = 0\n", "base"),
            ("[gadgets]\n", "gadgets"),
        ] {
            let msg = err(text).to_string();
            assert!(msg.contains("unknown field") && msg.contains(name), "{text:?}: {msg}");
        }
        let msg = err("logical_processors = \"four\"\n").to_string();
        assert!(msg.contains("line 1"), "{msg}");
        assert!(matches!(err("[[epc]]\nnode = 1\n"), ConfigError::Toml(_)), "size_mib is required");
    }

    #[test]
    fn serde_deserialization_validates_too() {
        let e = toml::from_str::<PlatformConfig>("logical_processors = 0").expect_err("invalid");
        assert!(e.to_string().contains("logical_processors = 0"), "{e}");
    }
}
