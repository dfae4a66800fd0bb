//! The node's config file, `DATA/meshward.toml` (optional; TOML, kebab-case keys), or the file
//! `meshward run --config FILE` (or `MESHWARD_CONFIG`) names, which must exist (the Debian
//! package's unit names `/etc/meshward/meshward.toml`). See the shipped
//! `meshward.example.toml` for every key.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::admin_limits::AdminLimits;
use crate::rate::Rate;

/// File name of the config inside the data directory.
pub const CONFIG_FILE: &str = "meshward.toml";
/// Largest config file accepted.
pub const MAX_CONFIG_FILE: u64 = 64 * 1024;
/// Largest rate-limit burst accepted (a larger one is no limit at all).
pub const MAX_RATE_BURST: u32 = 1_000_000;
/// Longest rate-limit interval accepted.
pub const MAX_RATE_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The node's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeConfig {
    /// No longer read: the licence issuer is fixed when the cluster is created (`meshward init
    /// --licence-issuer KEY`). A file that still sets it is refused with that advice, so the
    /// operator does not believe it does something.
    pub licence_issuer: Option<String>,
    /// A PEM file of external CA certificates whose client certificates the admin API accepts
    /// beside the cluster CA's (a relative path is taken from the data directory). Read when
    /// `run --admin-listen` starts; a bad file stops the start. Default: none.
    pub admin_client_ca: Option<std::path::PathBuf>,
    /// Admin API requests each user certificate (CN and serial) may make at once, before the steady rate
    /// applies (429 beyond). Default: [`crate::admin_limits::USER_BURST`].
    #[serde(default, deserialize_with = "admin_rate_burst")]
    pub admin_rate_burst: Option<NonZeroU32>,
    /// Time between a user's admin API requests at the steady rate, e.g. `"50ms"` (20 per
    /// second). Default: [`crate::admin_limits::USER_INTERVAL`].
    #[serde(default, deserialize_with = "admin_rate_interval")]
    pub admin_rate_interval: Option<Duration>,
    /// New admin API connections each client address (IPv6: each /64) may open at once,
    /// before the steady rate applies (closed before the TLS handshake beyond). Default:
    /// [`crate::admin_limits::ADDRESS_BURST`].
    #[serde(default, deserialize_with = "admin_address_rate_burst")]
    pub admin_address_rate_burst: Option<NonZeroU32>,
    /// Time between a client address's new admin API connections at the steady rate.
    /// Default: [`crate::admin_limits::ADDRESS_INTERVAL`].
    #[serde(default, deserialize_with = "admin_address_rate_interval")]
    pub admin_address_rate_interval: Option<Duration>,
    /// Admin API connections each client address (IPv6: each /64) may hold at once, 1 to
    /// [`crate::admin_limits::MAX_CONNECTIONS`] (a new one beyond is closed before the TLS
    /// handshake). Default: [`crate::admin_limits::ADDRESS_CONNECTIONS`].
    #[serde(default, deserialize_with = "admin_address_connections")]
    pub admin_address_connections: Option<NonZeroUsize>,
    /// Changes the watch stream's change log keeps (by count, 1 to [`MAX_KEEP_CHANGES`]); a
    /// watcher resuming from an older cursor gets `compacted`. Default:
    /// [`crate::store::DEFAULT_KEEP_CHANGES`].
    pub watch_keep_changes: Option<std::num::NonZeroU64>,
    /// Changes buffered for each watcher that does not read fast enough (1 to
    /// [`MAX_WATCH_BUFFER`]); past it the stream sends `overflow` and closes. Default:
    /// [`DEFAULT_WATCH_BUFFER`].
    pub watch_buffer: Option<NonZeroUsize>,
    /// Watch streams open at once on this node (1 to [`MAX_WATCHERS`]); beyond, 503.
    /// Default: [`DEFAULT_WATCHERS`].
    pub watch_subscribers: Option<NonZeroUsize>,
}

/// Largest `watch-keep-changes`.
pub const MAX_KEEP_CHANGES: u64 = 100_000_000;
/// Largest `watch-buffer`.
pub const MAX_WATCH_BUFFER: usize = 1_000_000;
/// Largest `watch-subscribers`.
pub const MAX_WATCHERS: usize = 100_000;
/// Default `watch-buffer`.
pub const DEFAULT_WATCH_BUFFER: usize = 4096;
/// Default `watch-subscribers`.
pub const DEFAULT_WATCHERS: usize = 256;

/// The watch stream's limits as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchLimits {
    /// Changes the log keeps.
    pub keep_changes: std::num::NonZeroU64,
    /// Each watcher's buffer.
    pub buffer: usize,
    /// Watchers at once.
    pub subscribers: usize,
}

impl NodeConfig {
    /// Reads `DATA/meshward.toml`; a missing file is the default config.
    pub fn load(data: &Path) -> anyhow::Result<NodeConfig> {
        NodeConfig::read(&data.join(CONFIG_FILE), false)
    }

    /// Reads a config file named on purpose (`meshward run --config FILE`): unlike
    /// `DATA/meshward.toml` it must exist.
    pub fn load_file(path: &Path) -> anyhow::Result<NodeConfig> {
        NodeConfig::read(path, true)
    }

    fn read(path: &Path, required: bool) -> anyhow::Result<NodeConfig> {
        let bytes = match crate::disk::read_at_most(path, MAX_CONFIG_FILE) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => anyhow::bail!(
                "{} is over the limit of {MAX_CONFIG_FILE} bytes",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(NodeConfig::default());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "config file {} not found; create it (see meshward.example.toml) or drop \
                 --config / MESHWARD_CONFIG",
                path.display()
            ),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
        NodeConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> anyhow::Result<NodeConfig> {
        let config: NodeConfig = toml::from_str(text)?;
        if config.licence_issuer.is_some() {
            anyhow::bail!(
                "`licence-issuer` is no longer read from {CONFIG_FILE}: a cluster's licence issuer is \
                 fixed when it is created (`meshward init --licence-issuer KEY`); remove the line"
            );
        }
        let over = |key: &str, max: u64| anyhow::anyhow!("{key} is over its limit of {max}");
        if config
            .watch_keep_changes
            .is_some_and(|n| n.get() > MAX_KEEP_CHANGES)
        {
            return Err(over("watch-keep-changes", MAX_KEEP_CHANGES));
        }
        if config
            .watch_buffer
            .is_some_and(|n| n.get() > MAX_WATCH_BUFFER)
        {
            return Err(over("watch-buffer", MAX_WATCH_BUFFER as u64));
        }
        if config
            .watch_subscribers
            .is_some_and(|n| n.get() > MAX_WATCHERS)
        {
            return Err(over("watch-subscribers", MAX_WATCHERS as u64));
        }
        Ok(config)
    }

    /// The admin API's rate limits: the configured values, defaults for the rest.
    pub fn admin_limits(&self) -> AdminLimits {
        let default = AdminLimits::default();
        let rate = |burst: Option<NonZeroU32>, interval: Option<Duration>, default: Rate| Rate {
            burst: burst.unwrap_or(default.burst),
            interval: interval.unwrap_or(default.interval),
        };
        AdminLimits {
            per_user: rate(
                self.admin_rate_burst,
                self.admin_rate_interval,
                default.per_user,
            ),
            per_address: rate(
                self.admin_address_rate_burst,
                self.admin_address_rate_interval,
                default.per_address,
            ),
            connections_per_address: self
                .admin_address_connections
                .unwrap_or(default.connections_per_address),
        }
    }

    /// The watch stream's limits: the configured values, defaults for the rest.
    pub fn watch_limits(&self) -> WatchLimits {
        WatchLimits {
            keep_changes: self
                .watch_keep_changes
                .unwrap_or(crate::store::DEFAULT_KEEP_CHANGES),
            buffer: self.watch_buffer.map_or(DEFAULT_WATCH_BUFFER, |n| n.get()),
            subscribers: self.watch_subscribers.map_or(DEFAULT_WATCHERS, |n| n.get()),
        }
    }
}

fn admin_rate_burst<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NonZeroU32>, D::Error> {
    burst("admin-rate-burst", d)
}

fn admin_rate_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    interval("admin-rate-interval", d)
}

fn admin_address_rate_burst<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<NonZeroU32>, D::Error> {
    burst("admin-address-rate-burst", d)
}

fn admin_address_rate_interval<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    interval("admin-address-rate-interval", d)
}

fn admin_address_connections<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<NonZeroUsize>, D::Error> {
    let key = "admin-address-connections";
    let max = crate::admin_limits::MAX_CONNECTIONS;
    let n = i64::deserialize(d)?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= max)
        .and_then(NonZeroUsize::new)
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{key} is {n}; give a number of connections from 1 to {max} (all the admin API \
                 holds)"
            ))
        })
}

/// A burst: a whole number from 1 to [`MAX_RATE_BURST`].
fn burst<'de, D: Deserializer<'de>>(key: &str, d: D) -> Result<Option<NonZeroU32>, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_RATE_BURST)
        .and_then(NonZeroU32::new)
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{key} is {n}; give a number of requests from 1 to {MAX_RATE_BURST}"
            ))
        })
}

/// An interval: a duration like `"50ms"` or `"10s"`, from 1 ms to [`MAX_RATE_INTERVAL`].
fn interval<'de, D: Deserializer<'de>>(key: &str, d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    let bad = |why: String| {
        serde::de::Error::custom(format!(
            "{key} = {text:?}: {why}; give the time between requests from \"1ms\" to \"24h\", \
             e.g. \"50ms\" for 20 per second"
        ))
    };
    let interval = parse_duration(&text).map_err(bad)?;
    if interval < Duration::from_millis(1) || interval > MAX_RATE_INTERVAL {
        return Err(bad("out of range".into()));
    }
    Ok(Some(interval))
}

/// Parses `500ms`, `30s`, `10m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m or 24h"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let config = NodeConfig::parse(include_str!("../../meshward.example.toml")).unwrap();
        assert_eq!(config.licence_issuer, None);
        // Its commented-out rate limits are the defaults, and parse when uncommented.
        let uncommented = include_str!("../../meshward.example.toml").replace("# admin-", "admin-");
        let config = NodeConfig::parse(&uncommented).unwrap();
        assert_eq!(config.admin_limits(), AdminLimits::default());
    }

    #[test]
    fn a_missing_file_is_the_default_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeConfig::load(dir.path()).unwrap(), NodeConfig::default());
        let path = dir.path().join(CONFIG_FILE);
        for (bytes, want) in [
            (
                vec![b'#'; MAX_CONFIG_FILE as usize + 1],
                "over the limit of 65536 bytes",
            ),
            (vec![0xff, 0xfe], "is not UTF-8 text"),
            (b"no-such-key = 1".to_vec(), "no-such-key"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let err = format!("{:#}", NodeConfig::load(dir.path()).unwrap_err());
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn a_named_file_must_exist_and_is_read_wherever_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("elsewhere.toml");
        let err = format!("{:#}", NodeConfig::load_file(&path).unwrap_err());
        assert!(err.contains("elsewhere.toml not found"), "{err}");
        assert!(err.contains("--config"), "{err}");
        std::fs::write(&path, "admin-address-connections = 5\n").unwrap();
        let config = NodeConfig::load_file(&path).unwrap();
        assert_eq!(config.admin_address_connections, NonZeroUsize::new(5));
        // The data directory's file is not what a named file reads.
        assert_eq!(NodeConfig::load(dir.path()).unwrap(), NodeConfig::default());
        std::fs::write(&path, "no-such-key = 1").unwrap();
        let err = format!("{:#}", NodeConfig::load_file(&path).unwrap_err());
        assert!(
            err.contains("elsewhere.toml") && err.contains("no-such-key"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_the_retired_licence_issuer_key_are_refused() {
        assert!(NodeConfig::parse("licence_issuer = \"00\"").is_err());
        let key = format!("licence-issuer = \"{}\"", "ab".repeat(32));
        let err = NodeConfig::parse(&key).unwrap_err().to_string();
        assert!(err.contains("init --licence-issuer"), "{err}");
        assert!(NodeConfig::parse("\u{0}garbage[[").is_err());
        let config = NodeConfig::parse("admin-client-ca = \"ca.pem\"").unwrap();
        assert_eq!(config.admin_client_ca, Some("ca.pem".into()));
        assert!(NodeConfig::parse("admin-client-ca = 3").is_err());
    }

    #[test]
    fn admin_rate_limits_default_and_take_the_configured_values() {
        let config = NodeConfig::parse("").unwrap();
        assert_eq!(config.admin_limits(), AdminLimits::default());
        let config = NodeConfig::parse(
            "admin-rate-burst = 3\nadmin-rate-interval = \"10s\"\nadmin-address-rate-burst = 7\n\
             admin-address-connections = 5\n",
        )
        .unwrap();
        let limits = config.admin_limits();
        assert_eq!(limits.connections_per_address.get(), 5);
        assert_eq!(limits.per_user.burst.get(), 3);
        assert_eq!(limits.per_user.interval, Duration::from_secs(10));
        assert_eq!(limits.per_address.burst.get(), 7);
        assert_eq!(
            limits.per_address.interval,
            AdminLimits::default().per_address.interval
        );
    }

    #[test]
    fn bad_admin_rate_limits_are_refused_naming_the_key() {
        for (text, want) in [
            (
                "admin-rate-burst = 0",
                "admin-rate-burst is 0; give a number",
            ),
            ("admin-rate-burst = -4", "admin-rate-burst is -4"),
            ("admin-address-rate-burst = 1000001", "from 1 to 1000000"),
            ("admin-rate-burst = \"64\"", "invalid type"),
            ("admin-rate-interval = \"0ms\"", "out of range"),
            ("admin-rate-interval = \"2d\"", "out of range"),
            (
                "admin-address-rate-interval = \"fast\"",
                "admin-address-rate-interval = \"fast\"",
            ),
            ("admin-rate-interval = \"1.5s\"", "the unit must be"),
            ("admin-rate-interval = 50", "invalid type"),
            (
                "admin-address-connections = 0",
                "admin-address-connections is 0; give a number of connections from 1 to 256",
            ),
            ("admin-address-connections = 257", "from 1 to 256"),
            (
                "admin-address-connections = -1",
                "admin-address-connections is -1",
            ),
            ("admin-address-connections = \"16\"", "invalid type"),
        ] {
            let err = format!("{:#}", NodeConfig::parse(text).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
