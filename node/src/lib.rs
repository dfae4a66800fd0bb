//! The pure meshward node: everything a node decides and keeps, without an async runtime, an
//! HTTP server, a command line or a network transport (those are `meshward-daemon`,
//! `meshward-client` and the `meshward` binary).
//!
//! - [`core`]: the sans-io node core (replication, mastered rollout, HA), fed inputs with the
//!   time and drained of outputs; the daemon and the simulator drive the same code.
//! - [`store`]: the redb store that makes the core's effects durable, plus the node's local
//!   data (session audit, node-only settings, peer book) that is never replicated.
//! - [`join`], [`roster`], [`authority`]: joining, the verified roster, what the leader holds.
//! - [`mek`], [`pki`], [`certs`], [`backup`]: secrets sealed under the MEK, the cluster CA,
//!   client certificates and their revocation, sealed backups.
//! - [`grants`]: users and grants, and the authorizer.
//! - [`ops`]: every request of the API executed by one function, on the daemon's live node or
//!   on the store directly.

#![deny(missing_docs)]
// Operations answer `Result<Reply, Problem>`: a problem document (RFC 9457) is 144 bytes, on
// error paths only; boxing it everywhere would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod admin_limits;
pub mod audit;
pub mod authority;
pub mod backup;
pub mod bootstrap;
pub mod certs;
pub mod cluster_config;
pub mod config;
pub mod core;
pub mod credentials;
pub mod disk;
pub mod drive;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
pub mod ha;
pub mod join;
pub mod licence;
pub mod lifecycle;
pub mod local_settings;
pub mod mek;
pub mod ops;
pub mod pki;
pub mod rate;
pub mod roster;
pub mod setup_gate;
pub mod standalone;
pub mod store;
pub mod tail;
