//! The admin API's limits: rates on [`meshward_node::rate`]'s GCRA, and connections held per address.
//!
//! - **Per client address** ([`address_key`]: an IPv4 address, an IPv6 /64), on each new
//!   connection, before the TLS handshake: a flood of handshakes, failed or not, costs little.
//!   Over the limit the connection is closed at once (no HTTP answer is possible before TLS).
//! - **Connections held per client address** ([`AdminLimits::connections_per_address`]), from
//!   the accept until the connection ends (see [`crate::admin`]): over it the new connection is
//!   closed at once, so an address that holds idle connections only uses up its own share.
//! - **Per certificate** (the verified certificate's CN and serial), on each request, before
//!   anything else reads it, including the actor's authorization: over the limit the answer is 429 with
//!   `Retry-After` (whole seconds, rounded up) and a JSON `error`.
//!
//! Both are configurable in `DATA/meshward.toml` ([`meshward_node::config::NodeConfig::admin_limits`])
//! and track at most [`RATE_KEYS`] users or addresses each; their counters are in
//! [`crate::admin::AdminMetrics`].

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::response::Response;
use tracing::debug;

use super::{AdminMetrics, ClientCert};
use meshward_node::admin_limits::AdminLimits;
use meshward_node::certs::Serial;
use meshward_node::rate::{Limited, Rate, RateTable};

/// Users, and client addresses, each limit tracks at most (beyond, the table forgets the one
/// closest to a full burst, and counts it); a few hundred KiB at most.
pub const RATE_KEYS: usize = 4096;
/// Longest CN kept as a rate-limit key (user names are far shorter).
const MAX_RATE_KEY: usize = 128;

/// The limits' state, on a monotonic clock that starts with the server.
#[derive(Debug)]
pub(crate) struct Limiters {
    origin: Instant,
    users: Mutex<RateTable<UserKey>>,
    addresses: Mutex<RateTable<IpAddr>>,
}

/// What the per-address limits count a client under: its IPv4 address, or the /64 of its IPv6
/// address (a host's or site's usual allocation, so that changing the low bits does not dodge
/// the limit). An IPv4-mapped IPv6 address counts as the IPv4 address. The same sources as the
/// connection slots' (`meshward_transport::slots::source_key`).
pub fn address_key(ip: IpAddr) -> IpAddr {
    meshward_transport::slots::source_key(ip)
}

impl Limiters {
    /// Fresh limits; the clock starts now.
    pub(crate) fn new(limits: AdminLimits) -> Limiters {
        let keys = NonZeroUsize::new(RATE_KEYS).unwrap_or(NonZeroUsize::MIN);
        Limiters {
            origin: Instant::now(),
            users: Mutex::new(RateTable::new(limits.per_user, keys)),
            addresses: Mutex::new(RateTable::new(limits.per_address, keys)),
        }
    }

    /// One request presenting `cert`: `None` when it may go on, else the 429 to answer.
    pub(crate) fn user(&self, cert: Option<&ClientCert>) -> Option<Response> {
        let key = user_key(cert);
        let now = self.now_ms();
        let mut users = lock(&self.users);
        let limited = users.check(&key, now).err()?;
        debug!(user = %key.0, retry_after_ms = limited.retry_after.as_millis(), "admin API request over the user's rate");
        Some(too_many_requests(&key.0, users.rate(), limited))
    }

    /// One new connection from `ip`: `Err` when it must be closed.
    pub(crate) fn address(&self, ip: IpAddr) -> Result<(), Limited> {
        let now = self.now_ms();
        lock(&self.addresses).check(&address_key(ip), now)
    }

    /// Writes the limits' counters into `metrics`.
    pub(crate) fn fill(&self, metrics: &mut AdminMetrics) {
        {
            let users = lock(&self.users);
            metrics.rate_limited = users.counters().limited;
            metrics.rate_forgotten = users.counters().forgotten;
            metrics.rate_tracked_users = users.len() as u64;
        }
        let addresses = lock(&self.addresses);
        metrics.address_rate_limited = addresses.counters().limited;
        metrics.address_rate_forgotten = addresses.counters().forgotten;
        metrics.rate_tracked_addresses = addresses.len() as u64;
    }

    /// Milliseconds since the server started.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// What the per-user limit counts a request under: its certificate, by CN (cut to
/// [`MAX_RATE_KEY`] bytes; the empty name without one) and serial (`None`: it did not parse).
/// Per certificate, not per CN alone: a revoked or stolen certificate naming alice spends its
/// own budget, not that of alice's valid one.
type UserKey = (String, Option<Serial>);

/// The per-user limit's key for `cert`.
fn user_key(cert: Option<&ClientCert>) -> UserKey {
    let cn = cert.and_then(|c| c.cn.as_deref()).unwrap_or("");
    let mut end = cn.len().min(MAX_RATE_KEY);
    while !cn.is_char_boundary(end) {
        end -= 1;
    }
    (cn[..end].to_string(), cert.map(|c| c.serial.clone()))
}

/// 429 with `Retry-After` (whole seconds, rounded up) and a JSON `error`.
fn too_many_requests(user: &str, rate: Rate, limited: Limited) -> Response {
    let secs = limited.retry_after_secs();
    let who = if user.is_empty() {
        "certificates without a CN".to_string()
    } else {
        format!("user {user}")
    };
    let mut problem = meshward_api::Problem::new(
        meshward_api::ProblemKind::RateLimited,
        format!(
            "too many requests from {who}: the admin API answers {} at once, then one every {}; \
             retry in {secs} s",
            rate.burst,
            humantime::format_duration(rate.interval)
        ),
    );
    problem.retry_after_s = Some(secs);
    crate::api::problem_response(problem)
}

/// Locks a rate table; a panic while it was held leaves it usable (each check is one step).
fn lock<T>(table: &Mutex<T>) -> MutexGuard<'_, T> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use axum::body::to_bytes;

    use axum::http::{StatusCode, header};

    use super::*;

    fn cert(cn: Option<&str>) -> ClientCert {
        ClientCert {
            cn: cn.map(String::from),
            serial: Serial::from_der_integer(&[1]),
        }
    }

    /// Slow limits: nothing refills during a test.
    fn slow(user_burst: u32, address_burst: u32) -> Limiters {
        let rate = |burst| {
            Rate::new(
                NonZeroU32::new(burst).expect("not zero"),
                Duration::from_secs(3600),
            )
        };
        Limiters::new(AdminLimits {
            per_user: rate(user_burst),
            per_address: rate(address_burst),
            ..AdminLimits::default()
        })
    }

    #[test]
    fn addresses_are_counted_per_ipv4_address_and_per_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(address_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        let limits = slow(1, 2);
        limits.address(ip("2001:db8:1:2::1")).unwrap();
        limits.address(ip("2001:db8:1:2::2")).unwrap();
        assert!(limits.address(ip("2001:db8:1:2::3")).is_err());
        limits.address(ip("2001:db8:1:3::1")).unwrap();
        limits.address(ip("127.0.0.1")).unwrap();
    }

    #[test]
    fn requests_are_limited_per_certificate() {
        let limits = slow(2, 1);
        for _ in 0..2 {
            assert!(limits.user(Some(&cert(Some("alice")))).is_none());
        }
        assert!(limits.user(Some(&cert(Some("alice")))).is_some());
        assert!(limits.user(Some(&cert(Some("bob")))).is_none());
        // Another certificate of alice's (say, her new one after the old was revoked) has its own
        // budget.
        let renewed = ClientCert {
            serial: Serial::from_der_integer(&[2]),
            ..cert(Some("alice"))
        };
        assert!(limits.user(Some(&renewed)).is_none());
        // A certificate without a CN is limited like any other; one that did not parse too.
        for _ in 0..2 {
            assert!(limits.user(Some(&cert(None))).is_none());
        }
        assert!(limits.user(Some(&cert(None))).is_some());
        assert!(limits.user(None).is_none());
        let mut metrics = AdminMetrics::default();
        limits.fill(&mut metrics);
        assert_eq!(metrics.rate_limited, 2);
        assert_eq!(metrics.rate_tracked_users, 5);
        assert_eq!(metrics.rate_forgotten, 0);
        // Long CNs are cut, on a character boundary.
        let long = "é".repeat(MAX_RATE_KEY);
        let key = user_key(Some(&cert(Some(&long))));
        assert!(
            key.0.len() <= MAX_RATE_KEY && long.starts_with(&key.0),
            "{key:?}"
        );
    }

    #[tokio::test]
    async fn over_the_limit_the_answer_is_429_with_retry_after_and_a_problem_document() {
        let limits = slow(1, 1);
        assert!(limits.user(Some(&cert(Some("alice")))).is_none());
        let response = limits
            .user(Some(&cert(Some("alice"))))
            .expect("over the limit");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers()[header::RETRY_AFTER].to_str().ok(),
            Some("3600")
        );
        let body = to_bytes(response.into_body(), 4096).await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["type"], "urn:meshward:problem:rate-limited");
        let message = body["detail"].as_str().expect("a detail");
        assert!(
            message.contains("too many requests from user alice")
                && message.contains("1 at once, then one every 1h")
                && message.contains("retry in 3600 s"),
            "{message}"
        );
    }
}
