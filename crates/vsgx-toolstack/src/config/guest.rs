//! The typed guest config ([`GuestConfig`]) and its validation against the host.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use vsgx_hv::policy::LaunchControl;
use vsgx_hw::config::MAX_EPC_SECTIONS;
use vsgx_isa::AttributesFlags;
use vsgx_isa::msr::INTEL_LE_PUBKEY_HASH;

use super::syntax::{Setting, Value, XlConfig};
use super::{ConfigError, ErrorKind, LoadError, Location, MIB, Warning};
use crate::host::HostInfo;
use crate::layout::{self, GuestLayout, LayoutError, Occupant};

/// Keys vsgx reads; any other key gives one [`Warning`].
const KNOWN_KEYS: [&str; 15] = [
    "name",
    "uuid",
    "type",
    "memory",
    "maxmem",
    "vcpus",
    "mmio_hole",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "epc",
    "sgx",
    "epc_sections",
    "epc_policy",
    "sgx_provision",
];

/// The keys vsgx reads from a guest config.
pub fn known_keys() -> &'static [&'static str] {
    &KNOWN_KEYS
}

/// `memory` when absent, in MiB (xl's default).
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Largest `memory`/`maxmem`, in MiB: the 1 TiB `vsgx-hv` gives one guest
/// ([`vsgx_hv::guest_ram::MAX_GUEST_RAM`]: guest RAM is sparse, but its dirty log costs the host
/// memory up front) less the agent mailbox, which is domain memory too.
pub const MAX_MEMORY_MIB: u64 = (vsgx_hv::guest_ram::MAX_GUEST_RAM - crate::layout::AGENT_MAILBOX_SIZE) >> 20;
/// `mmio_hole` when absent, in MiB.
pub const DEFAULT_MMIO_HOLE_MIB: u64 = 256;
/// Smallest and largest `mmio_hole`, in MiB (xl.cfg(5)'s bounds).
pub const MMIO_HOLE_RANGE_MIB: (u64, u64) = (256, 3840);
/// Most vCPUs a guest may have (Xen's HVM limit).
pub const MAX_VCPUS: u32 = 128;
/// Longest domain name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Namespace of the name-derived UUIDs (see [`Uuid::from_name`]).
pub const VSGX_UUID_NAMESPACE: Uuid =
    Uuid([0x6b, 0x1f, 0x0c, 0x9e, 0x3a, 0x52, 0x4d, 0x7e, 0x9c, 0x1a, 0x5e, 0x2f, 0x8d, 0x0b, 0x7a, 0x41]);

/// A domain UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parses the 8-4-4-4-12 hex form (either case).
    pub fn parse(text: &str) -> Option<Self> {
        let groups: Vec<&str> = text.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit())) {
            return None;
        }
        let digits: String = groups.concat();
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The UUID of a guest whose config gives none: a name-based UUID (RFC 9562 version 8, its
    /// SHA-256 construction, like version 5 with SHA-256 instead of SHA-1): the first 16 bytes of
    /// SHA-256([`VSGX_UUID_NAMESPACE`] ‖ UTF-8 name), version nibble 8, RFC variant. The same name
    /// always gives the same UUID.
    pub fn from_name(name: &str) -> Self {
        let mut h = Sha256::new();
        h.update(VSGX_UUID_NAMESPACE.0);
        h.update(name.as_bytes());
        let digest = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// `type`: how the guest boots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GuestType {
    /// `"hvm"` (the default: vsgx cannot run PV guests).
    #[default]
    Hvm,
    /// `"pvh"`.
    Pvh,
}

impl GuestType {
    /// `hvm` or `pvh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hvm => "hvm",
            Self::Pvh => "pvh",
        }
    }
}

/// `on_poweroff` / `on_reboot` / `on_crash`: what happens to the domain (xl.cfg(5)'s values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `destroy`.
    Destroy,
    /// `restart`.
    Restart,
    /// `rename-restart`.
    RenameRestart,
    /// `preserve`.
    Preserve,
    /// `coredump-destroy`.
    CoredumpDestroy,
    /// `coredump-restart`.
    CoredumpRestart,
    /// `soft-reset`.
    SoftReset,
}

impl Action {
    const ALL: [Self; 7] = [
        Self::Destroy,
        Self::Restart,
        Self::RenameRestart,
        Self::Preserve,
        Self::CoredumpDestroy,
        Self::CoredumpRestart,
        Self::SoftReset,
    ];

    /// The xl spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Destroy => "destroy",
            Self::Restart => "restart",
            Self::RenameRestart => "rename-restart",
            Self::Preserve => "preserve",
            Self::CoredumpDestroy => "coredump-destroy",
            Self::CoredumpRestart => "coredump-restart",
            Self::SoftReset => "soft-reset",
        }
    }
}

/// `epc_policy`: how the vEPC is backed (DESIGN §5.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EpcPolicy {
    /// Every vEPC page is backed at creation.
    #[default]
    Static,
}

impl EpcPolicy {
    /// Policies this build implements, by config spelling.
    pub const AVAILABLE: [&'static str; 1] = ["static"];
    /// Policies the design has but this build does not implement yet.
    pub const PLANNED: [&'static str; 2] = ["oversubscribe", "balloon"];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
        }
    }
}

/// One vEPC section as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EpcSectionConfig {
    /// Size in bytes (whole MiB).
    pub size: u64,
    /// NUMA node the backing EPC should come from.
    pub node: u32,
    /// Guest-physical base, if the config gives one (else the layout rule places it).
    pub base: Option<u64>,
}

/// A guest config, checked against the host it was validated for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    /// `name`.
    pub name: String,
    /// `uuid`, or [`Uuid::from_name`] of the name.
    pub uuid: Uuid,
    /// Whether `uuid` was derived from the name (no `uuid` key).
    pub uuid_derived: bool,
    /// `type`.
    pub guest_type: GuestType,
    /// `memory`, in MiB (default 128).
    pub memory_mib: u64,
    /// `maxmem`, in MiB (default: `memory`).
    pub maxmem_mib: u64,
    /// `vcpus` (default 1).
    pub vcpus: u32,
    /// `mmio_hole`, in MiB (default 256).
    pub mmio_hole_mib: u64,
    /// `on_poweroff` (default destroy).
    pub on_poweroff: Action,
    /// `on_reboot` (default restart).
    pub on_reboot: Action,
    /// `on_crash` (default destroy).
    pub on_crash: Action,
    /// vEPC sections, from `epc`, `sgx = "epc=…"` or `epc_sections` (empty: no EPC).
    pub epc: Vec<EpcSectionConfig>,
    /// `epc_policy`.
    pub epc_policy: EpcPolicy,
    /// `sgx = "lehash=…"`: initial hash MSRs (`None`: Intel's hash).
    pub lehash: Option<[u8; 32]>,
    /// `sgx = "lewr=…"`: the guest may write the hash MSRs (`None`: yes, the hypervisor's default).
    pub lewr: Option<bool>,
    /// `sgx_provision`: PROVISIONKEY allowed.
    pub provision: bool,
}

/// A loaded config: the guest, its layout on the host, and the warnings (unused keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The guest.
    pub config: GuestConfig,
    /// Its layout (memory map, CPUID, ACPI, domain spec).
    pub layout: GuestLayout,
    /// One per key vsgx does not use, in file order.
    pub warnings: Vec<Warning>,
}

impl GuestConfig {
    /// Reads, parses and validates a config file for `host`.
    pub fn load(path: &Path, host: &HostInfo) -> Result<Parsed, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Io { path: path.display().to_string(), source })?;
        Ok(Self::parse(&path.display().to_string(), &text, host)?)
    }

    /// Parses and validates config text; `file` names it in errors and warnings.
    pub fn parse(file: &str, text: &str, host: &HostInfo) -> Result<Parsed, ConfigError> {
        Self::from_xl(&XlConfig::parse(file, text)?, host)
    }

    /// Validates parsed settings for `host` and lays the guest out.
    pub fn from_xl(xl: &XlConfig, host: &HostInfo) -> Result<Parsed, ConfigError> {
        Check { xl, host }.run()
    }

    /// The launch control the hypervisor applies.
    pub fn launch_control(&self) -> LaunchControl {
        let default = LaunchControl::default();
        LaunchControl {
            lehash: self.lehash.unwrap_or(INTEL_LE_PUBKEY_HASH),
            writable: self.lewr.unwrap_or(default.writable),
        }
    }

    /// Total vEPC, in bytes.
    pub fn epc_bytes(&self) -> u64 {
        self.epc.iter().fold(0u64, |t, s| t.saturating_add(s.size))
    }
}

/// Where a vEPC section came from, for error messages.
struct Provenance {
    /// `epc`, `sgx epc` or `epc_sections[i]`.
    what: String,
    /// The value that defines it.
    at: Location,
    /// Its `base=` value, if any.
    base_at: Option<Location>,
}

/// A vEPC section before the host's default node is filled in.
struct DraftSection {
    size: u64,
    node: Option<u32>,
    base: Option<u64>,
    provenance: Provenance,
}

/// One place a config gives EPC: `epc`, `sgx = "epc=…"` or `epc_sections`.
struct EpcSource {
    /// `epc`, `sgx epc=` or `epc_sections`.
    key: &'static str,
    /// Where its value is.
    at: Location,
    sections: Vec<DraftSection>,
}

/// The launch-control options of `sgx`, with where each was written.
#[derive(Default)]
struct SgxOptions {
    lehash: Option<([u8; 32], Location)>,
    lewr: Option<(bool, Location)>,
}

/// One `name=value` option inside a string.
struct Opt<'a> {
    name: &'a str,
    value: &'a str,
    /// Where the value starts.
    at: Location,
}

const SIZE_EXPECTED: &str = "a size in MiB, or a number with a K, M, G or T suffix (decimal or 0x hex)";
const ADDRESS_EXPECTED: &str = "an address: a decimal or 0x hex number of bytes, optionally with a K, M, G or T suffix";

struct Check<'a> {
    xl: &'a XlConfig,
    host: &'a HostInfo,
}

impl<'a> Check<'a> {
    fn err(&self, at: Location, kind: ErrorKind) -> ConfigError {
        self.xl.error(at, kind)
    }

    fn get(&self, key: &str) -> Option<&'a Setting> {
        self.xl.get(key)
    }

    fn wrong_type(&self, what: &str, v: &Value, expected: &'static str) -> ConfigError {
        self.err(v.at, ErrorKind::WrongType { what: what.into(), expected, found: v.kind_name() })
    }

    fn number(&self, key: &str) -> Result<Option<(u64, &'a Value)>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(s) => s
                .value
                .as_number()
                .map(|n| Some((n, &s.value)))
                .ok_or_else(|| self.wrong_type(key, &s.value, "a number")),
        }
    }

    fn string(&self, key: &str) -> Result<Option<(&'a str, &'a Value)>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(s) => {
                s.value.as_str().map(|t| Some((t, &s.value))).ok_or_else(|| self.wrong_type(key, &s.value, "a string"))
            }
        }
    }

    /// A number key with a default and bounds.
    fn ranged(&self, key: &str, default: u64, min: u64, max: u64, unit: &'static str) -> Result<u64, ConfigError> {
        match self.number(key)? {
            None => Ok(default),
            Some((n, _)) if (min..=max).contains(&n) => Ok(n),
            Some((value, v)) => Err(self.err(v.at, ErrorKind::OutOfRange { what: key.into(), value, min, max, unit })),
        }
    }

    fn invalid(&self, at: Location, what: &str, expected: impl Into<String>, found: &str) -> ConfigError {
        self.err(
            at,
            ErrorKind::InvalidValue { what: what.into(), expected: expected.into(), found: format!("{found:?}") },
        )
    }

    fn invalid_number(&self, at: Location, what: &str, expected: &str, found: u64) -> ConfigError {
        self.err(
            at,
            ErrorKind::InvalidValue { what: what.into(), expected: expected.into(), found: format!("`{found}`") },
        )
    }

    fn run(&self) -> Result<Parsed, ConfigError> {
        let warnings = self.warnings();

        let (name, name_value) = self.string("name")?.ok_or_else(|| {
            self.err(
                Location::START,
                ErrorKind::Missing { key: "name", hint: "every guest needs one, e.g. name = \"guest1\"" },
            )
        })?;
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.chars().all(|c| c.is_ascii_digit());
        if !name_ok {
            return Err(self.invalid(
                name_value.at,
                "name",
                format!(
                    "1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit and not \
                     all digits (a domain is named by its name or its id)"
                ),
                name,
            ));
        }

        let (uuid, uuid_derived) = match self.string("uuid")? {
            None => (Uuid::from_name(name), true),
            Some((text, v)) => match Uuid::parse(text) {
                Some(u) => (u, false),
                None => return Err(self.invalid(v.at, "uuid", "a UUID: 8-4-4-4-12 hex digits", text)),
            },
        };

        let guest_type = match self.string("type")? {
            None => GuestType::default(),
            Some(("hvm", _)) => GuestType::Hvm,
            Some(("pvh", _)) => GuestType::Pvh,
            Some((text, v)) => {
                return Err(self.invalid(v.at, "type", "\"hvm\" or \"pvh\" (vsgx runs no PV guests)", text));
            }
        };

        let memory_mib = self.ranged("memory", DEFAULT_MEMORY_MIB, 1, MAX_MEMORY_MIB, " MiB")?;
        let maxmem_mib = self.ranged("maxmem", memory_mib, memory_mib, MAX_MEMORY_MIB, " MiB (at least `memory`)")?;
        let vcpus = self.ranged("vcpus", 1, 1, u64::from(MAX_VCPUS), "")?;
        let vcpus = u32::try_from(vcpus).unwrap_or(MAX_VCPUS);
        let (hole_min, hole_max) = MMIO_HOLE_RANGE_MIB;
        let mmio_hole_mib = self.ranged("mmio_hole", DEFAULT_MMIO_HOLE_MIB, hole_min, hole_max, " MiB")?;
        let on_poweroff = self.action("on_poweroff", Action::Destroy)?;
        let on_reboot = self.action("on_reboot", Action::Restart)?;
        let on_crash = self.action("on_crash", Action::Destroy)?;

        let epc_policy = match self.string("epc_policy")? {
            None | Some(("static", _)) => EpcPolicy::Static,
            Some((text, v)) => {
                let reason =
                    if EpcPolicy::PLANNED.contains(&text) { "not built yet" } else { "there is no such policy" };
                return Err(self.err(
                    v.at,
                    ErrorKind::UnknownPolicy {
                        value: text.to_string(),
                        reason,
                        available: EpcPolicy::AVAILABLE.to_vec(),
                    },
                ));
            }
        };

        let provision = match self.number("sgx_provision")? {
            None | Some((0, _)) => false,
            Some((1, _)) => true,
            Some((n, v)) => return Err(self.invalid_number(v.at, "sgx_provision", "0 or 1", n)),
        };

        let (drafts, sgx) = self.epc()?;
        let default_node = self.host.default_node();
        let epc: Vec<EpcSectionConfig> = drafts
            .iter()
            .map(|d| EpcSectionConfig { size: d.size, node: d.node.unwrap_or(default_node), base: d.base })
            .collect();
        let provenance: Vec<Provenance> = drafts.into_iter().map(|d| d.provenance).collect();
        let SgxOptions { lehash, lewr } = sgx;

        // Against the host.
        let caps = &self.host.capabilities;
        if !caps.flc {
            let no_flc = "this host has no flexible launch control (CPUID.7.0:ECX[30]), so guests have no \
                          launch-enclave hash MSRs";
            if let Some((_, at)) = lehash {
                return Err(self.err(at, ErrorKind::Unsupported { what: "sgx lehash".into(), reason: no_flc.into() }));
            }
            if let Some((true, at)) = lewr {
                return Err(self.err(at, ErrorKind::Unsupported { what: "sgx lewr".into(), reason: no_flc.into() }));
            }
        }
        if provision && caps.attributes.flags & AttributesFlags::PROVISIONKEY.bits() == 0 {
            let at = self.get("sgx_provision").map_or(Location::START, |s| s.value.at);
            return Err(self.err(
                at,
                ErrorKind::Unsupported {
                    what: "sgx_provision".into(),
                    reason: "this host does not let enclaves set PROVISIONKEY".into(),
                },
            ));
        }

        let config = GuestConfig {
            name: name.to_string(),
            uuid,
            uuid_derived,
            guest_type,
            memory_mib,
            maxmem_mib,
            vcpus,
            mmio_hole_mib,
            on_poweroff,
            on_reboot,
            on_crash,
            epc,
            epc_policy,
            lehash: lehash.map(|(h, _)| h),
            lewr: lewr.map(|(w, _)| w),
            provision,
        };
        let layout = layout::layout(&config, self.host).map_err(|e| self.layout_error(e, &provenance))?;
        Ok(Parsed { config, layout, warnings })
    }

    fn action(&self, key: &str, default: Action) -> Result<Action, ConfigError> {
        match self.string(key)? {
            None => Ok(default),
            Some((text, v)) => Action::ALL.into_iter().find(|a| a.as_str() == text).ok_or_else(|| {
                let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                self.invalid(v.at, key, format!("one of {}", names.join(", ")), text)
            }),
        }
    }

    /// One warning per key vsgx does not use, in file order.
    fn warnings(&self) -> Vec<Warning> {
        self.xl
            .settings()
            .iter()
            .filter(|s| !KNOWN_KEYS.contains(&s.key.as_str()))
            .map(|s| {
                let mut message = format!("`{}` is not used by vsgx; ignored", s.key);
                if let Some(k) = suggestion(&s.key) {
                    message.push_str(&format!(" (did you mean `{k}`?)"));
                }
                Warning { file: self.xl.file().to_string(), at: s.at, key: s.key.clone(), message }
            })
            .collect()
    }

    /// Splits `name=value,name=value` (blanks around items allowed, empty items skipped).
    fn options(&self, what: &str, v: &Value, text: &'a str, allowed: &[&str]) -> Result<Vec<Opt<'a>>, ConfigError> {
        let mut out: Vec<Opt<'a>> = Vec::new();
        let mut offset = 0;
        for piece in text.split(',') {
            let piece_offset = offset;
            offset += piece.len() + 1;
            let item = piece.trim();
            if item.is_empty() {
                continue;
            }
            let item_offset = piece_offset + (piece.len() - piece.trim_start().len());
            let item_at = v.location_in_string(item_offset);
            let Some(eq) = item.find('=') else {
                return Err(self.err(
                    item_at,
                    ErrorKind::InvalidValue {
                        what: what.into(),
                        expected: format!("`name=value` options separated by ',' (names: {})", allowed.join(", ")),
                        found: format!("`{item}`"),
                    },
                ));
            };
            let name = item[..eq].trim_end();
            let raw = &item[eq + 1..];
            let value = raw.trim_start();
            if !allowed.contains(&name) {
                return Err(self.err(
                    item_at,
                    ErrorKind::InvalidValue {
                        what: what.into(),
                        expected: format!("an option named {}", allowed.join(", ")),
                        found: format!("`{name}`"),
                    },
                ));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(self.err(item_at, ErrorKind::DuplicateOption { what: what.into(), option: name.into() }));
            }
            let at = v.location_in_string(item_offset + eq + 1 + (raw.len() - value.len()));
            out.push(Opt { name, value, at });
        }
        Ok(out)
    }

    /// A vEPC size: whole MiB, not zero.
    fn epc_size(&self, what: &str, text: &str, at: Location) -> Result<u64, ConfigError> {
        let bytes = parse_size(text, MIB).ok_or_else(|| self.invalid(at, what, SIZE_EXPECTED, text))?;
        if bytes == 0 || !bytes.is_multiple_of(MIB) {
            return Err(self.err(at, ErrorKind::NotWholeMib { what: what.into(), bytes }));
        }
        Ok(bytes)
    }

    /// The vEPC sections, from whichever of `epc`, `sgx = "epc=…"` and `epc_sections` is given,
    /// and the launch-control options of `sgx`.
    fn epc(&self) -> Result<(Vec<DraftSection>, SgxOptions), ConfigError> {
        let mut sources: Vec<EpcSource> = Vec::new();
        let single = |what: &str, size: u64, at: Location| EpcSource {
            key: if what == "epc" { "epc" } else { "sgx epc=" },
            at,
            sections: vec![DraftSection {
                size,
                node: None,
                base: None,
                provenance: Provenance { what: what.into(), at, base_at: None },
            }],
        };

        if let Some((mib, v)) = self.number("epc")? {
            if mib == 0 {
                let expected = "a size of at least 1 MiB (leave `epc` out for no EPC)";
                return Err(self.invalid_number(v.at, "epc", expected, 0));
            }
            let size = mib.saturating_mul(MIB);
            self.check_total("epc", size, v.at)?;
            sources.push(single("epc", size, v.at));
        }

        let mut sgx = SgxOptions::default();
        if let Some((text, v)) = self.string("sgx")? {
            for o in self.options("sgx", v, text, &["epc", "lehash", "lewr"])? {
                match o.name {
                    "epc" => {
                        let size = self.epc_size("sgx epc", o.value, o.at)?;
                        self.check_total("sgx epc", size, o.at)?;
                        sources.push(single("sgx epc", size, o.at));
                    }
                    "lehash" => sgx.lehash = Some((self.lehash(o.value, o.at)?, o.at)),
                    _ => {
                        sgx.lewr = Some(match o.value {
                            "0" => (false, o.at),
                            "1" => (true, o.at),
                            other => return Err(self.invalid(o.at, "sgx lewr", "0 or 1", other)),
                        });
                    }
                }
            }
        }

        if let Some(setting) = self.get("epc_sections") {
            let list = &setting.value;
            let items = list.as_list().ok_or_else(|| self.wrong_type("epc_sections", list, "a list of strings"))?;
            let mut sections = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if i >= MAX_EPC_SECTIONS {
                    let kind = ErrorKind::TooManySections { count: items.len(), max: MAX_EPC_SECTIONS };
                    return Err(self.err(item.at, kind));
                }
                sections.push(self.epc_section(format!("epc_sections[{i}]"), item)?);
            }
            let total = sections.iter().fold(0u64, |t, s| t.saturating_add(s.size));
            self.check_total("epc_sections", total, list.at)?;
            sources.push(EpcSource { key: "epc_sections", at: list.at, sections });
        }

        // At most one source, except that `epc` and `sgx = "epc=…"` may give the same size.
        sources.sort_by_key(|s| s.at);
        for (k, later) in sources.iter().enumerate() {
            for earlier in &sources[..k] {
                let singles = later.key != "epc_sections" && earlier.key != "epc_sections";
                let size = |s: &EpcSource| s.sections.first().map_or(0, |s| s.size);
                if singles && size(later) == size(earlier) {
                    continue;
                }
                let reason = if singles {
                    format!(
                        "they give different EPC sizes ({} MiB and {} MiB); keep one of them",
                        size(later) / MIB,
                        size(earlier) / MIB
                    )
                } else {
                    "both say how much EPC the guest has; keep one of them".into()
                };
                let kind = ErrorKind::Conflict {
                    key: later.key.into(),
                    other: earlier.key.into(),
                    other_at: earlier.at,
                    reason,
                };
                return Err(self.err(later.at, kind));
            }
        }
        Ok((sources.into_iter().next().map(|s| s.sections).unwrap_or_default(), sgx))
    }

    /// One `epc_sections` item: `"size=<MiB>[,node=<n>][,base=<addr>]"`.
    fn epc_section(&self, what: String, item: &Value) -> Result<DraftSection, ConfigError> {
        let text = item.as_str().ok_or_else(|| self.wrong_type(&what, item, "a string such as \"size=64,node=0\""))?;
        let (mut size, mut node, mut base, mut base_at) = (None, None, None, None);
        for o in self.options(&what, item, text, &["size", "node", "base"])? {
            match o.name {
                "size" => size = Some(self.epc_size(&what, o.value, o.at)?),
                "node" => {
                    let n = parse_uint(o.value)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| self.invalid(o.at, &what, "a NUMA node number", o.value))?;
                    let host_nodes = self.host.nodes();
                    if !host_nodes.contains(&n) {
                        return Err(self.err(o.at, ErrorKind::UnknownNode { what, node: n, host_nodes }));
                    }
                    node = Some(n);
                }
                _ => {
                    let b =
                        parse_size(o.value, 1).ok_or_else(|| self.invalid(o.at, &what, ADDRESS_EXPECTED, o.value))?;
                    if !b.is_multiple_of(4096) {
                        return Err(self.err(o.at, ErrorKind::Misaligned { what, base: b }));
                    }
                    base = Some(b);
                    base_at = Some(o.at);
                }
            }
        }
        let size = size.ok_or_else(|| self.invalid(item.at, &what, "a `size=<MiB>` option", text))?;
        Ok(DraftSection { size, node, base, provenance: Provenance { what, at: item.at, base_at } })
    }

    fn check_total(&self, what: &str, requested: u64, at: Location) -> Result<(), ConfigError> {
        let host = self.host.total_epc_bytes();
        if requested > host {
            return Err(self.err(at, ErrorKind::TooMuchEpc { what: what.into(), requested, host }));
        }
        Ok(())
    }

    fn lehash(&self, text: &str, at: Location) -> Result<[u8; 32], ConfigError> {
        let what = "sgx lehash";
        if let Some((i, c)) = text.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(self.err(
                at.plus_columns(text[..i].chars().count()),
                ErrorKind::BadLehash { what: what.into(), found: format!("{c:?}, which is not a hex digit") },
            ));
        }
        if text.len() != 64 {
            return Err(
                self.err(at, ErrorKind::BadLehash { what: what.into(), found: format!("{} hex digits", text.len()) })
            );
        }
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| self.err(at, ErrorKind::BadLehash { what: what.into(), found: format!("{text:?}") }))?;
        }
        Ok(hash)
    }

    fn layout_error(&self, e: LayoutError, provenance: &[Provenance]) -> ConfigError {
        let section = |i: usize| provenance.get(i);
        let what = |i: usize| section(i).map_or_else(|| format!("vEPC section {i}"), |p| p.what.clone());
        let at = |i: usize| section(i).map_or(Location::START, |p| p.base_at.unwrap_or(p.at));
        let memory_at = self.get("memory").map_or(Location::START, |s| s.value.at);
        match e {
            LayoutError::Hole { mib } => {
                let (min, max) = MMIO_HOLE_RANGE_MIB;
                let at = self.get("mmio_hole").map_or(Location::START, |s| s.value.at);
                self.err(at, ErrorKind::OutOfRange { what: "mmio_hole".into(), value: mib, min, max, unit: " MiB" })
            }
            LayoutError::RamTooLarge { end, bits, .. } => {
                self.err(memory_at, ErrorKind::AboveAddressWidth { what: "memory".into(), end, bits })
            }
            LayoutError::Size { section, size } => {
                self.err(at(section), ErrorKind::NotWholeMib { what: what(section), bytes: size })
            }
            LayoutError::Misaligned { section, base } => {
                self.err(at(section), ErrorKind::Misaligned { what: what(section), base })
            }
            LayoutError::Overlap { section, range, other, other_range } => {
                let other = match other {
                    Occupant::Section(j) => what(j),
                    other => other.to_string(),
                };
                self.err(at(section), ErrorKind::Overlap { what: what(section), range, other, other_range })
            }
            LayoutError::AboveAddressWidth { section, end, bits } => {
                self.err(at(section), ErrorKind::AboveAddressWidth { what: what(section), end, bits })
            }
            LayoutError::Unsupported(u) => {
                self.err(Location::START, ErrorKind::Unsupported { what: "sgx".into(), reason: u.to_string() })
            }
            LayoutError::Cpuid { section, source } => {
                self.err(at(section), ErrorKind::Unsupported { what: what(section), reason: source.to_string() })
            }
        }
    }
}

/// A decimal or `0x` hex number (hex digits in either case).
fn parse_uint(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}

/// A number with an optional binary K/M/G/T suffix (either case); without one it counts `bare_unit`
/// bytes.
fn parse_size(text: &str, bare_unit: u64) -> Option<u64> {
    let (number, unit) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1 << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1 << 30),
        b't' | b'T' => (&text[..text.len() - 1], 1 << 40),
        _ => (text, bare_unit),
    };
    parse_uint(number)?.checked_mul(unit)
}

/// A known key an unused key is probably a typo of: within two edits and sharing its first three
/// characters (so real xl keys such as `cpus` or `sdl` are not "corrected").
fn suggestion(key: &str) -> Option<&'static str> {
    KNOWN_KEYS.iter().copied().find(|k| {
        k.len() >= 3 && key.len() >= 3 && k.as_bytes()[..3] == key.as_bytes()[..3] && edit_distance(k, key) <= 2
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        let u = Uuid::parse("12345678-9abc-DEF0-1234-56789abcdef0").expect("valid");
        assert_eq!(u.to_string(), "12345678-9abc-def0-1234-56789abcdef0");
        for bad in [
            "",
            "12345678-9abc-def0-1234-56789abcdef",
            "12345678-9abc-def0-1234-56789abcdefg",
            "123456789abcdef0123456789abcdef0",
        ] {
            assert_eq!(Uuid::parse(bad), None, "{bad}");
        }
        let a = Uuid::from_name("web");
        assert_eq!(a, Uuid::from_name("web"));
        assert_ne!(a, Uuid::from_name("web2"));
        assert_eq!(a.0[6] >> 4, 8, "version 8");
        assert_eq!(a.0[8] >> 6, 0b10, "RFC variant");
    }

    #[test]
    fn sizes_and_numbers() {
        assert_eq!(parse_size("64", MIB), Some(64 << 20));
        assert_eq!(parse_size("0x40", MIB), Some(64 << 20));
        assert_eq!(parse_size("1536K", MIB), Some(1536 << 10));
        assert_eq!(parse_size("2g", MIB), Some(2 << 30));
        assert_eq!(parse_size("4096", 1), Some(4096));
        assert_eq!(parse_size("", MIB), None);
        assert_eq!(parse_size("M", MIB), None);
        assert_eq!(parse_size("1.5", MIB), None);
        assert_eq!(parse_size("99999999999999T", MIB), None);
        assert_eq!(parse_uint("0x"), None);
        assert_eq!(parse_uint("0XfF"), Some(255));
    }

    #[test]
    fn suggestions_only_for_likely_typos() {
        assert_eq!(suggestion("epc_section"), Some("epc_sections"));
        assert_eq!(suggestion("memroy"), Some("memory"));
        assert_eq!(suggestion("cpus"), None);
        assert_eq!(suggestion("sdl"), None);
        assert_eq!(suggestion("vif"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
