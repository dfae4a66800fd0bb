//! The meshward daemon: the node's actor over the mesh transport, and the edges around the pure
//! node (`meshward-node`) that need a runtime, sockets or the network.
//!
//! - [`actor`]: `meshward run`, one task owning the store, the core and the transport handle;
//!   it executes the core's outputs (persist first, then send) and every API request.
//! - [`api`]: the API's router (utoipa-documented handlers over `meshward_api`), served on the
//!   local socket and, through [`admin`], on HTTPS with client certificates.
//! - [`setup`]: both sides of the setup endpoint (`meshward join`, and the leader's answers).
//! - [`sealed`]: a node whose MEK is missing serves status, health and unseal only.

#![deny(missing_docs)]
#![allow(clippy::result_large_err)]

pub mod actor;
pub mod admin;
pub mod api;
pub mod pairing;
pub mod sealed;
pub mod setup;

pub use actor::{RunOptions, run};
