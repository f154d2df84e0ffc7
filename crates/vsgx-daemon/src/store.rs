//! The daemon's state: `STATE_DIR/vsgxd.redb` (redb, transactional).
//!
//! Tables: `host` (`"seed"` → the platform seed the fused secrets derive from, so data sealed
//! before a restart unseals after it) and `domains` (id → the config the domain was created from).

use std::path::Path;

use anyhow::Context;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// Table of domains: id → the config they were created from (JSON `{"file", "config"}`).
const DOMAINS: redb::TableDefinition<u32, &str> = redb::TableDefinition::new("domains");
/// Table of host facts: `"seed"` → the platform seed.
const HOST: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("host");

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
}
