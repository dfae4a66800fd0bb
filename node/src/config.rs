//! The node's config file, `DATA/meshward.toml` (optional; TOML, kebab-case keys). See the
//! shipped `meshward.example.toml` for every key.

use std::path::Path;

use serde::Deserialize;

/// File name of the config inside the data directory.
pub const CONFIG_FILE: &str = "meshward.toml";
/// Largest config file accepted.
pub const MAX_CONFIG_FILE: u64 = 64 * 1024;

/// The node's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeConfig {
    /// ed25519 public key (64 hex digits) of the licence issuer: `meshward licence install`
    /// accepts only licences it signed. Default: none, so no licence can be installed.
    pub licence_issuer: Option<String>,
    /// A PEM file of external CA certificates whose client certificates the admin API accepts
    /// beside the cluster CA's (a relative path is taken from the data directory). Read when
    /// `run --admin-listen` starts; a bad file stops the start. Default: none.
    pub admin_client_ca: Option<std::path::PathBuf>,
}

impl NodeConfig {
    /// Reads `DATA/meshward.toml`; a missing file is the default config.
    pub fn load(data: &Path) -> anyhow::Result<NodeConfig> {
        let path = data.join(CONFIG_FILE);
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NodeConfig::default()),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        anyhow::ensure!(
            len <= MAX_CONFIG_FILE,
            "{} is {len} bytes; the limit is {MAX_CONFIG_FILE}",
            path.display()
        );
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        NodeConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> anyhow::Result<NodeConfig> {
        let config: NodeConfig = toml::from_str(text)?;
        if config.licence_issuer.is_some() {
            config.issuer()?;
        }
        Ok(config)
    }

    /// The licence issuer's key, or a clear error when none is configured.
    pub fn issuer(&self) -> anyhow::Result<[u8; 32]> {
        let hex = self.licence_issuer.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "no licence issuer configured; set `licence-issuer = \"<64 hex digits>\"` in \
                 DATA/{CONFIG_FILE} (see meshward.example.toml)"
            )
        })?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex.trim(), &mut key)
            .map_err(|_| anyhow::anyhow!("licence-issuer is not 64 hex digits"))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let config = NodeConfig::parse(include_str!("../../meshward.example.toml")).unwrap();
        assert!(config.issuer().is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_issuers_are_refused() {
        assert!(NodeConfig::parse("licence_issuer = \"00\"").is_err());
        assert!(NodeConfig::parse("licence-issuer = \"zz\"").is_err());
        assert!(NodeConfig::parse("\u{0}garbage[[").is_err());
        assert!(NodeConfig::parse("").unwrap().issuer().is_err());
        let config = NodeConfig::parse("admin-client-ca = \"ca.pem\"").unwrap();
        assert_eq!(config.admin_client_ca, Some("ca.pem".into()));
        assert!(NodeConfig::parse("admin-client-ca = 3").is_err());
    }
}
