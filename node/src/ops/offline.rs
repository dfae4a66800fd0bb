//! The backend of operations run on the store directly, when no daemon runs (the CLI's
//! offline commands, the sealed node's unseal).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use meshward_crdt::{Op, ReplicaConfig, RowChange};

use super::{Backend, now_ms};
use crate::store::Store;

/// Runs commands directly on the store in a data directory.
#[derive(Debug)]
pub struct LocalBackend {
    data: PathBuf,
    store: Option<Store>,
    read_only: bool,
}

impl LocalBackend {
    /// A backend for the store in `data` (opened read-write when first needed).
    pub fn new(data: PathBuf) -> Self {
        LocalBackend {
            data,
            store: None,
            read_only: false,
        }
    }

    /// A backend for `request` on the store in `data`: opened read-only when the request only
    /// reads, so it cannot change the store and other readers may hold it at once.
    pub fn for_request(data: PathBuf, request: &meshward_api::Request) -> Self {
        let (_, access) = crate::ops::access::resource(request);
        LocalBackend {
            read_only: access == crate::ops::access::Access::Read,
            ..LocalBackend::new(data)
        }
    }
}

/// Opens the store in `data` read-only. The first command on a new data directory creates the
/// store and the node's identity first, as every command always did.
fn open_for_reading(data: &Path) -> anyhow::Result<Store> {
    let context = || format!("opening the store in {}", data.display());
    if data.join(crate::store::STORE_FILE).is_file() {
        let store = Store::open_read_only(data).with_context(context)?;
        if store.has_identity()? {
            return Ok(store);
        }
    }
    Store::open(data).with_context(context)?.identity()?;
    Store::open_read_only(data).with_context(context)
}

impl Backend for LocalBackend {
    fn store(&mut self) -> anyhow::Result<&Store> {
        if self.store.is_none() {
            let store = if self.read_only {
                open_for_reading(&self.data)?
            } else {
                Store::open(&self.data)
                    .with_context(|| format!("opening the store in {}", self.data.display()))?
            };
            self.store = Some(store);
        }
        self.store.as_ref().context("store not open")
    }

    fn data_dir(&mut self) -> anyhow::Result<PathBuf> {
        Ok(self.data.clone())
    }

    fn commit(&mut self, ops: Vec<Op>) -> anyhow::Result<Vec<RowChange>> {
        // The daemon stopped uncleanly while announcing its writes: its peers may hold changes
        // of this node that the store lacks, and a commit here would sign another change at
        // the same position ([`crate::tail`]).
        anyhow::ensure!(
            !crate::tail::is_open(&self.data)?,
            "the node's daemon stopped uncleanly while announcing its writes, and its peers may \
             hold changes this store lacks: start `meshward run` (it takes them back from its \
             peers), then write through it"
        );
        let store = self.store()?;
        let identity = store.identity()?;
        let mut replica = store.load_replica(&identity, ReplicaConfig::default())?;
        let effects = replica.commit(now_ms(), ops)?;
        store.persist(&effects)?;
        Ok(effects.rows)
    }
}
