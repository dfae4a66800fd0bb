//! The meshward node: its redb store and the `meshward` command.
//!
//! Shared tables are replicated by [`meshward_crdt::Replica`]; this crate makes its effects
//! durable ([`store`]) and keeps the node's local data (session audit, node-only settings,
//! peer book) that is never replicated.

#![deny(missing_docs)]

#[cfg(feature = "daemon")]
pub mod admin;
#[cfg(feature = "daemon")]
pub mod admin_limits;
pub mod audit;
pub mod backup;
pub mod certs;
#[cfg(feature = "daemon")]
pub mod cli;
#[cfg(feature = "daemon")]
pub mod cli_admin;
#[cfg(feature = "daemon")]
pub mod cluster;
pub mod cluster_config;
#[cfg(feature = "daemon")]
pub mod config;
pub mod control;
pub mod core;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod demo;
pub mod disk;
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
#[cfg(feature = "daemon")]
pub mod ha;
pub mod join;
pub mod licence;
pub mod mek;
pub mod pki;
pub mod rate;
pub mod roster;
#[cfg(feature = "daemon")]
pub mod sealed;
pub mod setup_gate;
pub mod store;
