//! Domain lifecycle on one host: create a domain from config text, find it by name or id, destroy
//! it, and report the host's and the domains' EPC. This is what `vsgxd` serves; it owns no socket.
//!
//! Domain ids start at 1 (0 is the host, as Xen's dom0) and are never reused while the host runs.
//! Names are unique. A create either succeeds whole or leaves the host exactly as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use vsgx_hv::domain::{Domain, DomainError};
use vsgx_hv::epc::{DomainId, EpcError, EpcManager};
use vsgx_hw::platform::Platform;

use crate::config::{ConfigError, GuestConfig, Warning};
use crate::host::HostInfo;
use crate::layout::GuestLayout;
use crate::report::{SgxInfo, SgxListEntry};

/// All guests of one host together have at most this much RAM: 16 TiB. Guest RAM is sparse, but
/// each guest's dirty log costs host memory up front (1 bit per page: 512 MiB for 16 TiB).
pub const MAX_HOST_GUEST_RAM: u64 = 16 << 40;

/// Why a lifecycle request failed. Nothing changed on the host when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The config is not valid for this host.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another domain has this name.
    #[error("a domain named {0:?} exists already")]
    NameInUse(String),
    /// The id is 0 (the host) or taken.
    #[error("domain id {0} is the host's or taken")]
    IdInUse(u32),
    /// No domain has this name or id.
    #[error("no domain {0:?} (give a name or a numeric id; `vsgx list` shows them)")]
    NoSuchDomain(String),
    /// The hypervisor refused the domain (for example: not enough free EPC).
    #[error("domain {name:?}: {source}")]
    Create {
        /// The domain's name.
        name: String,
        /// The hypervisor's answer.
        source: DomainError,
    },
    /// The host's guests together would have more RAM than [`MAX_HOST_GUEST_RAM`].
    #[error(
        "domain {name:?}: {asked} MiB of guest RAM asked, {in_use} MiB in use of the host's {} MiB for all guests",
        MAX_HOST_GUEST_RAM >> 20
    )]
    RamBudget {
        /// The domain's name.
        name: String,
        /// What it asks (MiB, its memory map's RAM and the agent mailbox).
        asked: u64,
        /// What the other guests have (MiB).
        in_use: u64,
    },
    /// Tearing a domain down failed; its pages are quarantined by the EPC manager.
    #[error("destroying domain {name:?}: {source}")]
    Destroy {
        /// The domain's name.
        name: String,
        /// The EPC manager's answer.
        source: EpcError,
    },
}

impl HostError {
    /// Whether the error is the requester's (bad config, unknown name) rather than the host's.
    pub fn is_request_error(&self) -> bool {
        matches!(self, Self::Config(_) | Self::NameInUse(_) | Self::IdInUse(_) | Self::NoSuchDomain(_))
    }
}

/// A running domain and what it was created from.
#[derive(Debug)]
pub struct Guest {
    /// Its id.
    pub id: DomainId,
    /// The validated config.
    pub config: GuestConfig,
    /// The layout the guest sees.
    pub layout: GuestLayout,
    /// Warnings from its config (unused keys).
    pub warnings: Vec<Warning>,
    domain: Domain,
}

impl Guest {
    /// The hypervisor's domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

/// One host: a platform, its EPC manager and the domains on it.
#[derive(Debug)]
pub struct Host {
    epc: Arc<EpcManager>,
    info: HostInfo,
    guests: BTreeMap<u32, Guest>,
    next_id: u32,
}

impl Host {
    /// A host on `platform` with no domains.
    pub fn new(platform: Arc<Platform>) -> Self {
        let info = HostInfo::from_platform(&platform);
        Self { epc: Arc::new(EpcManager::new(platform)), info, guests: BTreeMap::new(), next_id: 1 }
    }

    /// What the toolstack knows of this host (used to validate configs).
    pub fn info(&self) -> &HostInfo {
        &self.info
    }

    /// The host's EPC manager.
    pub fn epc(&self) -> &Arc<EpcManager> {
        &self.epc
    }

    /// Parses and validates `text` (named `file` in errors) and creates the domain, backing all of
    /// its vEPC now (static policy).
    pub fn create(&mut self, file: &str, text: &str) -> Result<&Guest, HostError> {
        self.create_as(DomainId(self.next_id), file, text)
    }

    /// [`Host::create`] with a chosen id: a daemon restoring the domains it ran before a restart
    /// gives them back their ids. Later ids are allocated above it.
    pub fn create_as(&mut self, id: DomainId, file: &str, text: &str) -> Result<&Guest, HostError> {
        let parsed = GuestConfig::parse(file, text, &self.info)?;
        let name = parsed.config.name.clone();
        if self.guests.values().any(|g| g.config.name == name) {
            return Err(HostError::NameInUse(name));
        }
        if id.0 == 0 || self.guests.contains_key(&id.0) {
            return Err(HostError::IdInUse(id.0));
        }
        let ram = |spec: &vsgx_hv::domain::DomainSpec| spec.ram.iter().map(|r| r.1).sum::<u64>();
        let asked = ram(&parsed.layout.domain);
        let in_use: u64 = self.guests.values().map(|g| ram(g.domain.spec())).sum();
        if in_use + asked > MAX_HOST_GUEST_RAM {
            return Err(HostError::RamBudget { name, asked: asked >> 20, in_use: in_use >> 20 });
        }
        let domain = Domain::create(id, parsed.layout.domain.clone(), Arc::clone(&self.epc))
            .map_err(|source| HostError::Create { name: name.clone(), source })?;
        self.reserve_ids_below(id.0.saturating_add(1));
        let guest = Guest { id, config: parsed.config, layout: parsed.layout, warnings: parsed.warnings, domain };
        Ok(self.guests.entry(id.0).or_insert(guest))
    }

    /// Never hand out an id below `next` (ids of domains that existed before a restart).
    pub fn reserve_ids_below(&mut self, next: u32) {
        self.next_id = self.next_id.max(next);
    }

    /// The domain named `dom`, or whose id is `dom`.
    pub fn find(&self, dom: &str) -> Result<&Guest, HostError> {
        let by_id = dom.parse::<u32>().ok().and_then(|id| self.guests.get(&id));
        by_id
            .or_else(|| self.guests.values().find(|g| g.config.name == dom))
            .ok_or_else(|| HostError::NoSuchDomain(dom.to_owned()))
    }

    /// Destroys a domain; its EPC returns to the host.
    pub fn destroy(&mut self, dom: &str) -> Result<(), HostError> {
        let id = self.find(dom)?.id.0;
        let Some(guest) = self.guests.remove(&id) else { return Err(HostError::NoSuchDomain(dom.to_owned())) };
        let name = guest.config.name;
        guest.domain.destroy().map(drop).map_err(|source| HostError::Destroy { name, source })
    }

    /// The domains, by id.
    pub fn guests(&self) -> impl Iterator<Item = &Guest> {
        self.guests.values()
    }

    /// `sgxinfo`.
    pub fn sgxinfo(&self) -> SgxInfo {
        let platform = self.epc.platform();
        SgxInfo::new(|leaf, sub| platform.cpuid(leaf, sub), &self.epc.stats())
    }

    /// `sgxlist`: every domain, or only `dom`.
    pub fn sgxlist(&self, dom: Option<&str>) -> Result<Vec<SgxListEntry>, HostError> {
        let stats = self.epc.stats();
        let entry = |g: &Guest| SgxListEntry::new(g.id, g.domain.spec(), g.config.epc_policy, &stats);
        match dom {
            Some(dom) => Ok(vec![entry(self.find(dom)?)]),
            None => Ok(self.guests.values().map(entry).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn host() -> Host {
        Host::new(Platform::new(vsgx_hw::config::embedded_default()))
    }

    #[test]
    fn guests_take_epc_until_it_runs_out_and_give_it_all_back() {
        let mut host = host();
        let before = host.sgxinfo();
        let web = host.create("web.cfg", "name = 'web'\nepc = 64\n").unwrap().id;
        assert_eq!(web, DomainId(1));
        // 64 + 224 MiB > the host's 256 MiB.
        let big = "name = 'big'\nepc_sections = [ 'size=128,node=0', 'size=96,node=1' ]\n";
        let Err(err) = host.create("big.cfg", big) else { panic!("288 MiB of vEPC on a 256 MiB host") };
        assert!(matches!(err, HostError::Create { .. }) && !err.is_request_error(), "{err}");
        assert!(err.to_string().contains("big"), "{err}");
        // The refused create left nothing behind.
        assert_eq!(host.sgxinfo().epc_used_bytes, 64 * MIB);
        assert_eq!(host.guests().count(), 1);

        let db = host.create("db.cfg", "name = 'db'\nepc = 128\n").unwrap().id;
        assert_eq!(db, DomainId(2));
        let list = host.sgxlist(None).unwrap();
        assert_eq!(
            list.iter().map(|e| (e.name.as_str(), e.resident_pages)).collect::<Vec<_>>(),
            [("web", 64 * 256), ("db", 128 * 256)]
        );
        assert_eq!(host.sgxlist(Some("2")).unwrap()[0].name, "db");

        host.destroy("web").unwrap();
        host.destroy("2").unwrap();
        assert_eq!(host.sgxinfo(), before);
        // Ids are not reused.
        assert_eq!(host.create("web.cfg", "name = 'web'\nepc = 8\n").unwrap().id, DomainId(3));
        // A restored domain keeps its id; new ones come after it.
        assert_eq!(host.create_as(DomainId(9), "r.cfg", "name = 'r'\n").unwrap().id, DomainId(9));
        assert!(matches!(host.create_as(DomainId(9), "s.cfg", "name = 's'\n"), Err(HostError::IdInUse(9))));
        assert!(matches!(host.create_as(DomainId(0), "s.cfg", "name = 's'\n"), Err(HostError::IdInUse(0))));
        assert_eq!(host.create("n.cfg", "name = 'n'\n").unwrap().id, DomainId(10));
    }

    #[test]
    fn the_largest_guest_the_config_allows_is_one_the_hypervisor_creates_and_the_host_has_a_total() {
        let mut host = host();
        let max = crate::config::MAX_MEMORY_MIB;
        let text = |name: &str, mib: u64| format!("name = '{name}'\nmemory = {mib}\n");
        let ram = |g: &Guest| g.domain().spec().ram.iter().map(|r| r.1).sum::<u64>() >> 20;
        assert_eq!(ram(host.create("max.cfg", &text("max", max)).unwrap()), max + 2, "RAM and the mailbox");
        host.destroy("max").unwrap();
        let err = host.create("max.cfg", &text("max", max + 1)).unwrap_err();
        assert!(err.is_request_error() && err.to_string().contains("must be from 1 to"), "{err}");
        // Sixteen 1 TiB guests fill the host's 16 TiB; the next one is refused and takes nothing.
        for i in 0..15 {
            host.create("g.cfg", &text(&format!("g{i}"), max)).unwrap();
        }
        host.create("small.cfg", &text("small", 1024)).unwrap();
        let err = host.create("one.cfg", &text("one", max)).unwrap_err();
        assert!(matches!(err, HostError::RamBudget { .. }) && !err.is_request_error(), "{err}");
        assert!(err.to_string().contains("of the host's 16777216 MiB for all guests"), "{err}");
        assert_eq!(host.guests().count(), 16);
    }

    #[test]
    fn request_errors_change_nothing() {
        let mut host = host();
        host.create("a.cfg", "name = 'a'\nepc = 8\n").unwrap();
        let before = host.sgxinfo();
        let cases = [
            host.create("a.cfg", "name = 'a'\nepc = 8\n").unwrap_err(),
            host.create("b.cfg", "name = 'b'\nepc = \n").unwrap_err(),
            host.destroy("nope").unwrap_err(),
            host.destroy("99").unwrap_err(),
            host.sgxlist(Some("nope")).unwrap_err(),
        ];
        for err in &cases {
            assert!(err.is_request_error(), "{err}");
        }
        assert_eq!(cases[0].to_string(), "a domain named \"a\" exists already");
        assert!(cases[1].to_string().starts_with("b.cfg:2:"), "{}", cases[1]);
        assert_eq!(host.sgxinfo(), before);
        assert_eq!(host.guests().count(), 1);
    }
}
