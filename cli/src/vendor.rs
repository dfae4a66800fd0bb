//! The licence vendor's commands, run offline on the vendor's machine: `licence keygen` makes
//! the issuer key pair, `licence issue` signs a licence for one cluster. Neither talks to a
//! node.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use meshward_node::licence::{IssuerKey, LicenceTerms, MAX_CUSTOMER, MAX_ISSUER_KEY_FILE};

use crate::args::LicenceCmd;

/// `licence keygen --out FILE`: FILE (0600) and FILE.pub; prints the public key.
pub fn keygen(file: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let key = IssuerKey::generate();
    let public = pub_path(file);
    if public.exists() {
        bail!("{} exists; give another --out", public.display());
    }
    meshward_node::disk::write_new(file, key.to_file().as_bytes(), 0o600)
        .with_context(|| format!("writing the issuer key {}", file.display()))?;
    meshward_node::disk::write_new(&public, format!("{}\n", key.public_hex()).as_bytes(), 0o644)
        .with_context(|| format!("writing {}", public.display()))?;
    writeln!(
        out,
        "{}\n\nsigning key: {} (keep it offline; it signs every licence)\npublic key:  {}\n\
         create clusters with `meshward init --licence-issuer {}`",
        key.public_hex(),
        file.display(),
        public.display(),
        key.public_hex()
    )?;
    Ok(())
}

/// `licence issue ...`: signs the terms and writes the licence file.
pub fn issue(cmd: &LicenceCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    let LicenceCmd::Issue {
        issuer_key,
        cluster,
        nodes,
        expires,
        customer,
        out: file,
    } = cmd
    else {
        bail!("not `licence issue`");
    };
    let bytes = meshward_node::disk::read_bounded(issuer_key, MAX_ISSUER_KEY_FILE)?;
    let key = IssuerKey::from_file(&bytes).with_context(|| issuer_key.display().to_string())?;
    let cluster = parse_cluster(cluster)?;
    if customer.len() > MAX_CUSTOMER {
        bail!("--customer is at most {MAX_CUSTOMER} bytes");
    }
    let now = SystemTime::now();
    let expires_at = parse_expiry(expires, now)?;
    let expires_at_ms = u64::try_from(
        expires_at
            .duration_since(UNIX_EPOCH)
            .context("--expires is before 1970")?
            .as_millis(),
    )
    .context("--expires is too far away")?;
    let licence = key.sign(LicenceTerms {
        customer: customer.clone(),
        cluster: cluster.clone(),
        max_nodes: *nodes,
        expires_at_ms,
    });
    meshward_node::disk::write_new(file, licence.to_file().as_bytes(), 0o644)
        .with_context(|| format!("writing the licence {}", file.display()))?;
    writeln!(
        out,
        "licence for cluster {cluster}: {nodes} nodes until {} written to {}",
        humantime::format_rfc3339_seconds(expires_at),
        file.display()
    )?;
    Ok(())
}

/// `FILE.pub` beside `FILE`.
fn pub_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// A cluster id: 32 hex digits, lowercased.
fn parse_cluster(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--cluster {text:?} is not a cluster id (32 hex digits; `meshward status` shows it)");
    }
    Ok(text.to_ascii_lowercase())
}

/// An expiry: a date (midnight UTC), an RFC 3339 time, or a duration from `now`; it must be in
/// the future.
fn parse_expiry(text: &str, now: SystemTime) -> anyhow::Result<SystemTime> {
    let text = text.trim();
    let is_date = text.len() == 10 && text.as_bytes().get(4) == Some(&b'-');
    let at = if is_date {
        humantime::parse_rfc3339(&format!("{text}T00:00:00Z"))
            .map_err(|e| anyhow::anyhow!("--expires {text:?}: {e}"))?
    } else if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        at
    } else {
        let span: Duration = humantime::parse_duration(text).map_err(|_| {
            anyhow::anyhow!(
                "--expires {text:?} is not a date (2027-12-31), an RFC 3339 time or a duration (90d)"
            )
        })?;
        now.checked_add(span)
            .with_context(|| format!("--expires {text:?} is too far away"))?
    };
    if at <= now {
        bail!("--expires {text:?} is not in the future");
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_dates_times_or_durations_in_the_future() {
        let now = humantime::parse_rfc3339("2026-12-05T13:00:00Z").unwrap();
        let at = |t: &str| parse_expiry(t, now);
        assert_eq!(
            at("2027-01-01").unwrap(),
            humantime::parse_rfc3339("2027-01-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            at("2027-01-01T12:30:00Z").unwrap(),
            humantime::parse_rfc3339("2027-01-01T12:30:00Z").unwrap()
        );
        assert_eq!(at("90d").unwrap(), now + Duration::from_secs(90 * 86_400));
        for bad in ["2020-01-01", "yesterday", "", "2027-13-45", "-5d", "1s2"] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_ids_are_32_hex_digits() {
        assert_eq!(parse_cluster(&"AB".repeat(16)).unwrap(), "ab".repeat(16));
        for bad in ["", "ab", &"zz".repeat(16), &"ab".repeat(17)] {
            assert!(parse_cluster(bad).is_err(), "{bad}");
        }
    }
}
