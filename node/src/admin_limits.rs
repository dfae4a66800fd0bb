//! The admin API's limits as configured (`admin-*` keys of `DATA/meshward.toml`) and their
//! defaults; the daemon enforces them.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::rate::Rate;

/// Connections held at once, from all addresses; more are closed at once and counted. Each
/// costs a task and its TLS and HTTP buffers (some tens of KiB).
pub const MAX_CONNECTIONS: usize = 256;

/// Requests a user may make at once (the per-user burst): a script's batch or a dashboard's
/// refresh of every endpoint passes without waiting. Configurable: `admin-rate-burst`.
pub const USER_BURST: u32 = 64;
/// Time between a user's requests once the burst is spent: 20 requests per second, far above
/// what an operator or a scraper needs, and a small share of the one actor that answers every
/// request. Configurable: `admin-rate-interval`.
pub const USER_INTERVAL: Duration = Duration::from_millis(50);
/// New connections a client address may open at once: twice [`USER_BURST`], so that a few
/// users behind one address (a NAT, a bastion), each opening a connection per request, meet
/// their own limit first. Configurable: `admin-address-rate-burst`.
pub const ADDRESS_BURST: u32 = 128;
/// Time between a client address's new connections once the burst is spent: 100 TLS
/// handshakes per second, a few percent of one core. Configurable:
/// `admin-address-rate-interval`.
pub const ADDRESS_INTERVAL: Duration = Duration::from_millis(10);
/// Connections one client address may hold at once: a few operators behind one address (a
/// NAT, a bastion), each with a browser's handful of connections and a script or two; far
/// below [`MAX_CONNECTIONS`], so that one address cannot take the slots of
/// others. Configurable: `admin-address-connections`.
pub const ADDRESS_CONNECTIONS: usize = 16;
/// The admin API's limits (`admin-rate-*`, `admin-address-rate-*` and
/// `admin-address-connections` in `DATA/meshward.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminLimits {
    /// Requests per user (certificate CN); 429 beyond.
    pub per_user: Rate,
    /// New connections per client address (client address (an IPv4 address, an IPv6 /64)); closed before the TLS handshake
    /// beyond.
    pub per_address: Rate,
    /// Connections one client address (client address (an IPv4 address, an IPv6 /64)) may hold at once; a new one beyond is
    /// closed before the TLS handshake.
    pub connections_per_address: NonZeroUsize,
}

impl Default for AdminLimits {
    /// [`USER_BURST`] per [`USER_INTERVAL`], [`ADDRESS_BURST`] per [`ADDRESS_INTERVAL`],
    /// [`ADDRESS_CONNECTIONS`] held per address.
    fn default() -> AdminLimits {
        let rate = |burst: u32, interval| Rate {
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
            interval,
        };
        AdminLimits {
            per_user: rate(USER_BURST, USER_INTERVAL),
            per_address: rate(ADDRESS_BURST, ADDRESS_INTERVAL),
            connections_per_address: NonZeroUsize::new(ADDRESS_CONNECTIONS)
                .unwrap_or(NonZeroUsize::MIN),
        }
    }
}
