//! Mastered data: written by the leader only (a follower forwards the write to it), signed into
//! the chain, read on every node. Cluster settings, users and grants, client certificates and
//! their revocation, the licence, joining bundles, passwords, mastered bundles.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a mastered write did: the chain version the leader signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Written {
    /// The mastered version of the record.
    pub version: u64,
}

/// A cluster setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConfigEntry {
    /// The key: `password.min-length`, `password.min-classes`, `password.max-age-days`,
    /// `fingerprint.approval-required`, or `managed.NAME`.
    pub key: String,
    /// Its value as this node holds it (`null`: unset, it has its default).
    pub value: Option<String>,
}

/// A revoked client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedEntry {
    /// Its serial, hex.
    pub serial: String,
    /// The mastered version that revoked it.
    pub version: u64,
}

/// An admin user and its grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserEntry {
    /// The user name (the CN of its certificates).
    pub name: String,
    /// Its grants: `root`, `admin:NS`, `guest:NS`, `guest:*`.
    pub grants: Vec<String>,
}

/// `POST /v1/users/{name}/certificates`: issue a client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IssueCertificate {
    /// Validity in days (1 to 3650; default 365).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_days: Option<u32>,
}

/// A client certificate and its key, in PEM. The key is a secret: store it 0600.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IssuedCertificate {
    /// The user it names.
    pub user: String,
    /// Its serial, hex (for revocation).
    pub serial: String,
    /// The certificate.
    pub certificate_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The cluster CA's certificate.
    pub ca_pem: String,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("user", &self.user)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/certificates/revoked`: revoke a client certificate by serial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokeCertificate {
    /// The serial in hex (`:` allowed).
    pub serial: String,
}

/// The installed licence's terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LicenceInfo {
    /// Whom it was issued to.
    pub customer: String,
    /// The most nodes the cluster may have (the leader included).
    pub max_nodes: u32,
    /// When it ends, unix ms.
    pub expires_at_ms: u64,
}

/// `PUT /v1/licence`: a licence file as the issuer signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstallLicence {
    /// The licence file's JSON text.
    pub licence: String,
}

/// `POST /v1/bundles`: make a one-time joining bundle (it supersedes any earlier one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateBundle {
    /// Validity in seconds (1 to 86 400; default 86 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// A joining bundle. It holds a one-time secret: store it 0600, hand it over privately.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Bundle {
    /// The bundle file's bytes, base64.
    pub file_base64: String,
    /// When it expires, unix ms.
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/passwords/{user}`: set a local user's password under the leader's policy. The
/// password travels in the body only (never in a URL or a log).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangePassword {
    /// The new password.
    pub password: String,
}

impl std::fmt::Debug for ChangePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangePassword(..)")
    }
}

/// A user whose password the leader set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PasswordEntry {
    /// The user.
    pub user: String,
    /// The mastered version of its last change.
    pub version: u64,
}

/// `POST /v1/mastered/import`: a signed mastered bundle, every record verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportMastered {
    /// The bundle file's bytes, base64.
    pub bundle_base64: String,
}

/// What an import stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Imported {
    /// Records added.
    pub imported: u64,
    /// The roster after it (writer ids).
    pub roster: Vec<String>,
}
