//! The meshward API's vocabulary: every request a node serves and every reply, as plain serde
//! types shared by the server (the daemon), the client crate, the CLI and the tests.
//!
//! - Resources live under `/v1` ([`Request::route`] gives each one's method and path); bodies
//!   and answers are JSON; errors are RFC 9457 problem documents ([`Problem`]).
//! - The node executes a [`Request`] with one function and answers a [`Reply`]; the same
//!   request travels over the local Unix socket (`DATA/meshward.sock`, its caller is the local
//!   operator with `root` rights) or HTTPS with a client certificate (its CN is the user).
//! - Secrets (passwords, private keys, bundle files) appear only in bodies, never in paths or
//!   queries, and their `Debug` never shows them.
//!
//! Light on purpose: serde, serde_json and utoipa (the OpenAPI schemas) only, so a program
//! that talks to meshward does not compile the node.

#![deny(missing_docs)]

pub mod cluster;
pub mod credentials;
mod fault;
pub mod local;
pub mod managed;
pub mod node;
mod problem;
mod request;
pub mod shared;

pub use fault::{FaultDone, FaultRequest};
pub use problem::{PROBLEM_JSON, Problem, ProblemKind};
pub use request::{Method, Reply, Request, Route, segment};

/// Largest request body a node accepts, in bytes (413 beyond).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
