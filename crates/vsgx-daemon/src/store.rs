//! The daemon's state: `STATE_DIR/vsgxd.redb` (redb, transactional).
//!
//! Tables: `host` (`"seed"` → the platform seed the fused secrets derive from, so data sealed
//! before a restart unseals after it), `domains` (id → the config the domain was created from) and
//! `quarantine` (EPC page address → its last owner and why EREMOVE failed: a daemon restarting on
//! the same machine keeps those pages out of service).

use std::path::Path;

use anyhow::Context;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use vsgx_hv::epc::{DomainId, Owner, QuarantinedPage, RemoveFailure};
use vsgx_isa::cpu::{Exception, LeafStatus};
use vsgx_isa::status::SgxError;

/// Table of domains: id → the config they were created from (JSON `{"file", "config"}`).
const DOMAINS: redb::TableDefinition<u32, &str> = redb::TableDefinition::new("domains");
/// Table of host facts: `"seed"` → the platform seed.
const HOST: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("host");

/// Table of quarantined EPC pages: HPA → JSON [`StoredQuarantine`].
const QUARANTINE: redb::TableDefinition<u64, &str> = redb::TableDefinition::new("quarantine");

/// A quarantined page as stored.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct StoredQuarantine {
    /// The domain that held it, or `None` for the hypervisor.
    domid: Option<u32>,
    failure: StoredFailure,
}

/// [`RemoveFailure`] as stored (codes, not text, so it reads back as the same value).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredFailure {
    /// EREMOVE answered this SGX error code.
    Error {
        code: u64,
    },
    /// EREMOVE faulted.
    GeneralProtection {
        code: u32,
    },
    PageFault {
        linear: u64,
        error_code: u32,
    },
    InvalidOpcode,
    DeviceNotAvailable,
    /// EREMOVE returned a status it never produces: ZF/CF and RAX as seen.
    Status {
        zf: bool,
        cf: bool,
        rax: u64,
    },
}

impl StoredQuarantine {
    fn of(page: &QuarantinedPage) -> Self {
        let domid = match page.owner {
            Owner::Domain(d) => Some(d.0),
            Owner::Hypervisor => None,
        };
        let failure = match page.failure {
            RemoveFailure::Error(e) => StoredFailure::Error { code: e.code() },
            RemoveFailure::Fault(Exception::GeneralProtection(code)) => StoredFailure::GeneralProtection { code },
            RemoveFailure::Fault(Exception::PageFault { linear, error_code }) => {
                StoredFailure::PageFault { linear, error_code }
            }
            RemoveFailure::Fault(Exception::InvalidOpcode) => StoredFailure::InvalidOpcode,
            RemoveFailure::Fault(Exception::DeviceNotAvailable) => StoredFailure::DeviceNotAvailable,
            RemoveFailure::Unexpected(status) => match status {
                LeafStatus::Success => StoredFailure::Status { zf: false, cf: false, rax: 0 },
                LeafStatus::Error(e) => StoredFailure::Status { zf: true, cf: false, rax: e.code() },
                LeafStatus::Info(e) => StoredFailure::Status { zf: false, cf: true, rax: e.code() },
                LeafStatus::Unknown(rax) => StoredFailure::Status { zf: true, cf: true, rax },
            },
        };
        Self { domid, failure }
    }

    fn page(&self, hpa: u64) -> anyhow::Result<QuarantinedPage> {
        let owner = self.domid.map_or(Owner::Hypervisor, |d| Owner::Domain(DomainId(d)));
        let sgx_error = |code| SgxError::from_code(code).with_context(|| format!("unknown SGX error code {code}"));
        let failure = match self.failure {
            StoredFailure::Error { code } => RemoveFailure::Error(sgx_error(code)?),
            StoredFailure::GeneralProtection { code } => RemoveFailure::Fault(Exception::GeneralProtection(code)),
            StoredFailure::PageFault { linear, error_code } => {
                RemoveFailure::Fault(Exception::PageFault { linear, error_code })
            }
            StoredFailure::InvalidOpcode => RemoveFailure::Fault(Exception::InvalidOpcode),
            StoredFailure::DeviceNotAvailable => RemoveFailure::Fault(Exception::DeviceNotAvailable),
            StoredFailure::Status { zf, cf, rax } => RemoveFailure::Unexpected(match (zf, cf) {
                (false, false) if rax == 0 => LeafStatus::Success,
                (true, false) => LeafStatus::Error(sgx_error(rax)?),
                (false, true) => LeafStatus::Info(sgx_error(rax)?),
                _ => LeafStatus::Unknown(rax),
            }),
        };
        Ok(QuarantinedPage { hpa, owner, failure })
    }
}

/// A domain as stored: enough to create it again.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredDomain {
    pub(crate) file: String,
    pub(crate) config: String,
}

/// The daemon's transactional store.
pub(crate) struct Store {
    db: redb::Database,
}

impl Store {
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the state directory", dir.display()))?;
        let path = dir.join("vsgxd.redb");
        let db = redb::Database::create(&path)
            .with_context(|| format!("{}: cannot open the state store", path.display()))?;
        let store = Self { db };
        let tx = store.db.begin_write()?;
        tx.open_table(DOMAINS)?;
        tx.open_table(HOST)?;
        tx.open_table(QUARANTINE)?;
        tx.commit()?;
        Ok(store)
    }

    /// The host's seed: the stored one, or a fresh random one stored now.
    pub(crate) fn seed(&self) -> anyhow::Result<u64> {
        let tx = self.db.begin_write()?;
        let seed = {
            let mut table = tx.open_table(HOST)?;
            let stored = table.get("seed")?.map(|v| v.value());
            match stored {
                Some(seed) => seed,
                None => {
                    let mut bytes = [0u8; 8];
                    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the host seed: {e}"))?;
                    let seed = u64::from_le_bytes(bytes);
                    table.insert("seed", seed)?;
                    seed
                }
            }
        };
        tx.commit()?;
        Ok(seed)
    }

    pub(crate) fn domains(&self) -> anyhow::Result<Vec<(u32, StoredDomain)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DOMAINS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, value) = row?;
            let stored = serde_json::from_str(value.value())
                .with_context(|| format!("state store: domain {} is unreadable", id.value()))?;
            out.push((id.value(), stored));
        }
        Ok(out)
    }

    pub(crate) fn put(&self, id: u32, domain: &StoredDomain) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(DOMAINS)?.insert(id, serde_json::to_string(domain)?.as_str())?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn remove(&self, id: u32) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(DOMAINS)?.remove(id)?;
        tx.commit()?;
        Ok(())
    }

    /// The quarantined pages of earlier runs, oldest first as far as the store knows (by address).
    pub(crate) fn quarantine(&self) -> anyhow::Result<Vec<QuarantinedPage>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (hpa, value) = row?;
            let hpa = hpa.value();
            let unreadable = || format!("state store: quarantined page {hpa:#x} is unreadable");
            let stored: StoredQuarantine = serde_json::from_str(value.value()).with_context(unreadable)?;
            out.push(stored.page(hpa).with_context(unreadable)?);
        }
        Ok(out)
    }

    /// Makes the stored quarantine exactly `pages` (the EPC manager's list), in one transaction.
    pub(crate) fn set_quarantine(&self, pages: &[QuarantinedPage]) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(QUARANTINE)?;
            table.retain(|_, _| false)?;
            for page in pages {
                table.insert(page.hpa, serde_json::to_string(&StoredQuarantine::of(page))?.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_quarantine_record_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("vsgx-store-test-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let owner = Owner::Domain(DomainId(7));
        let failures = [
            RemoveFailure::Error(SgxError::ChildPresent),
            RemoveFailure::Error(SgxError::EnclaveAct),
            RemoveFailure::Fault(Exception::GP0),
            RemoveFailure::Fault(Exception::PageFault { linear: 0x1234_5000, error_code: 0x8005 }),
            RemoveFailure::Fault(Exception::InvalidOpcode),
            RemoveFailure::Fault(Exception::DeviceNotAvailable),
            RemoveFailure::Unexpected(LeafStatus::Success),
            RemoveFailure::Unexpected(LeafStatus::Info(SgxError::Blkstate)),
            RemoveFailure::Unexpected(LeafStatus::Error(SgxError::PgInvld)),
            RemoveFailure::Unexpected(LeafStatus::Unknown(99)),
        ];
        let pages: Vec<QuarantinedPage> = failures
            .iter()
            .enumerate()
            .map(|(i, &failure)| QuarantinedPage {
                hpa: 0x40_0000_0000 + i as u64 * 4096,
                owner: if i == 3 { Owner::Hypervisor } else { owner },
                failure,
            })
            .collect();
        store.set_quarantine(&pages).unwrap();
        assert_eq!(store.quarantine().unwrap(), pages);
        store.set_quarantine(&pages[..2]).unwrap();
        assert_eq!(store.quarantine().unwrap(), pages[..2]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
