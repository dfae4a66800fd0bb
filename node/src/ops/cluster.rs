//! Mastered data: cluster settings, users and grants, client certificates and revocations, the
//! licence, joining bundles, passwords, mastered bundles.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use meshward_api::cluster::{
    Bundle, ConfigEntry, CreateBundle, ImportMastered, Imported, InstallLicence, IssueCertificate,
    IssuedCertificate, LicenceInfo, PasswordEntry, RevokeCertificate, RevokedEntry, UserEntry,
    Written,
};
use meshward_api::{Problem, ProblemKind, Reply};
use meshward_crdt::WriterId;
use meshward_crdt::mastered::RecordKind;

use super::{Backend, failure, master, require_leader};
use crate::authority::{self, access};
use crate::certs::{RevokeError, Serial};
use crate::cluster_config::{self, ClusterConfig, ConfigChange};
use crate::grants::{ChangeError, Grant, UserChange, UserName};
use crate::join::JoinRefusal;
use crate::licence::{Licence, MAX_LICENCE_FILE};

/// Default validity of a client certificate, days.
const DEFAULT_CERT_DAYS: u32 = 365;
/// Longest validity of a client certificate, days.
const MAX_CERT_DAYS: u32 = 3650;

fn config(backend: &mut dyn Backend) -> Result<ClusterConfig, Problem> {
    let records = backend
        .store()
        .and_then(|s| Ok(s.mastered_records()?))
        .map_err(failure)?;
    Ok(ClusterConfig::from_records(&records))
}

pub(super) fn list_config(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    Ok(Reply::ConfigList(
        config(backend)?
            .list()
            .into_iter()
            .map(|(key, value)| ConfigEntry {
                key,
                value: Some(value),
            })
            .collect(),
    ))
}

pub(super) fn get_config(backend: &mut dyn Backend, key: String) -> Result<Reply, Problem> {
    cluster_config::validate_key(&key).map_err(|e| Problem::bad_input("key", e.to_string()))?;
    let value = config(backend)?.get(&key);
    Ok(Reply::Config(ConfigEntry { key, value }))
}

pub(super) fn set_config(
    backend: &mut dyn Backend,
    key: String,
    value: Option<String>,
) -> Result<Reply, Problem> {
    let change = match value {
        Some(value) => {
            cluster_config::validate(&key, &value).map_err(|e| {
                let field = if cluster_config::validate_key(&key).is_err() {
                    "key"
                } else {
                    "value"
                };
                Problem::bad_input(field, e.to_string())
            })?;
            ConfigChange::Set { key, value }
        }
        None => {
            cluster_config::validate_key(&key)
                .map_err(|e| Problem::bad_input("key", e.to_string()))?;
            ConfigChange::Unset { key }
        }
    };
    let version = master(backend, RecordKind::Config, change.encode())?;
    Ok(Reply::Written(Written { version }))
}

pub(super) fn list_users(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    let access = backend.store().and_then(access).map_err(failure)?;
    Ok(Reply::Users(
        access
            .users
            .iter()
            .map(|(u, grants)| UserEntry {
                name: u.as_str().to_string(),
                grants: grants.iter().map(Grant::to_string).collect(),
            })
            .collect(),
    ))
}

/// Creates (`add`) or deletes a user, or gives (`add`) or takes back a grant.
pub(super) fn change_user(
    backend: &mut dyn Backend,
    grant_field: &str,
    name: String,
    grant: Option<String>,
    add: bool,
) -> Result<Reply, Problem> {
    let user: UserName = name
        .parse()
        .map_err(|e: crate::grants::ParseError| Problem::bad_input("name", e.to_string()))?;
    let grant = grant
        .map(|g| g.parse::<Grant>())
        .transpose()
        .map_err(|e| Problem::bad_input(grant_field, e.to_string()))?;
    let change = match (grant, add) {
        (None, true) => UserChange::Create(user),
        (None, false) => UserChange::Delete(user),
        (Some(g), true) => UserChange::AddGrant(user, g),
        (Some(g), false) => UserChange::RevokeGrant(user, g),
    };
    let users = backend
        .store()
        .and_then(authority::users)
        .map_err(failure)?;
    users.check(&change).map_err(|e| {
        let kind = match e {
            ChangeError::NoUser(_) | ChangeError::NoGrant(..) => ProblemKind::NotFound,
            _ => ProblemKind::Conflict,
        };
        Problem::new(kind, e.to_string())
    })?;
    let (kind, payload) = change.encode();
    let version = master(backend, kind, payload)?;
    Ok(Reply::Written(Written { version }))
}

pub(super) fn issue_certificate(
    backend: &mut dyn Backend,
    name: String,
    body: IssueCertificate,
) -> Result<Reply, Problem> {
    let user: UserName = name
        .parse()
        .map_err(|e: crate::grants::ParseError| Problem::bad_input("name", e.to_string()))?;
    let days = body.valid_days.unwrap_or(DEFAULT_CERT_DAYS);
    if days == 0 || days > MAX_CERT_DAYS {
        return Err(Problem::bad_input(
            "valid_days",
            format!("give 1 to {MAX_CERT_DAYS} days, not {days}"),
        ));
    }
    let users = backend
        .store()
        .and_then(authority::users)
        .map_err(failure)?;
    if users.grants(&user).is_none() {
        return Err(Problem::new(
            ProblemKind::NotFound,
            format!("no user {user}; create it first (PUT /v1/users/{user})"),
        ));
    }
    let chain = require_leader(backend)?;
    let data = backend.data_dir().map_err(failure)?;
    let mek = authority::load_mek(&data).map_err(unavailable)?;
    let store = backend.store().map_err(failure)?;
    let ca = authority::open_ca(store, chain.cluster(), &mek).map_err(failure)?;
    let now = SystemTime::now();
    let valid = Duration::from_secs(u64::from(days) * 24 * 3600);
    let issued = ca
        .issue_client(user.as_str(), now, now + valid)
        .map_err(|e| failure(e.into()))?;
    let serial = Serial::of_certificate(&issued.cert)
        .ok_or_else(|| failure(anyhow::anyhow!("the new certificate has no serial")))?;
    let key_der = pem::Pem::new("PRIVATE KEY", issued.key.to_vec());
    let key_pem = pem::encode(&key_der);
    // The PEM wrapper's copy of the key is wiped; the reply's copy leaves with the answer.
    drop(zeroize::Zeroizing::new(key_der.into_contents()));
    Ok(Reply::Certificate(IssuedCertificate {
        user: user.as_str().to_string(),
        serial: serial.to_string(),
        certificate_pem: pem::encode(&pem::Pem::new("CERTIFICATE", issued.cert.clone())),
        key_pem,
        ca_pem: pem::encode(&pem::Pem::new("CERTIFICATE", ca.cert.clone())),
    }))
}

fn unavailable(e: anyhow::Error) -> Problem {
    Problem::new(ProblemKind::Unavailable, format!("{e:#}"))
}

pub(super) fn revoke_certificate(
    backend: &mut dyn Backend,
    body: RevokeCertificate,
) -> Result<Reply, Problem> {
    let serial: Serial = body
        .serial
        .parse()
        .map_err(|e: crate::grants::ParseError| Problem::bad_input("serial", e.to_string()))?;
    let access = backend.store().and_then(access).map_err(failure)?;
    access.revoked.check(&serial).map_err(|e| match e {
        RevokeError::Already(..) => Problem::new(ProblemKind::Conflict, e.to_string()),
        RevokeError::Full => Problem::new(ProblemKind::Conflict, e.to_string()),
    })?;
    let (kind, payload) = serial.revocation();
    let version = master(backend, kind, payload)?;
    Ok(Reply::Written(Written { version }))
}

pub(super) fn list_revoked(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    let access = backend.store().and_then(access).map_err(failure)?;
    Ok(Reply::Revoked(
        access
            .revoked
            .iter()
            .map(|(s, version)| RevokedEntry {
                serial: s.to_string(),
                version,
            })
            .collect(),
    ))
}

pub(super) fn get_licence(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    let licence = backend
        .store()
        .and_then(authority::current_licence)
        .map_err(failure)?;
    Ok(Reply::Licence(licence.map(|l| LicenceInfo {
        customer: l.terms.customer,
        max_nodes: l.terms.max_nodes,
        expires_at_ms: l.terms.expires_at_ms,
    })))
}

pub(super) fn install_licence(
    backend: &mut dyn Backend,
    body: InstallLicence,
) -> Result<Reply, Problem> {
    if body.licence.len() > MAX_LICENCE_FILE {
        return Err(Problem::new(
            ProblemKind::TooLarge,
            format!("a licence file is at most {MAX_LICENCE_FILE} bytes"),
        ));
    }
    require_leader(backend)?;
    let chain = backend
        .chain()
        .map_err(failure)?
        .ok_or_else(|| Problem::new(ProblemKind::Conflict, "this node is in no cluster"))?;
    let issuer = chain.licence_issuer().ok_or_else(|| {
        Problem::new(
            ProblemKind::Conflict,
            "this cluster was created without a licence issuer (`meshward init --licence-issuer KEY`), so it takes no licence",
        )
    })?;
    let now = super::now_ms() as u64;
    let licence = Licence::from_file(body.licence.as_bytes(), &issuer, &chain.cluster(), now)
        .map_err(|e| Problem::bad_input("licence", e.to_string()))?;
    let version = master(backend, RecordKind::Licence, licence.encode())?;
    Ok(Reply::Written(Written { version }))
}

pub(super) fn create_bundle(
    backend: &mut dyn Backend,
    body: CreateBundle,
) -> Result<Reply, Problem> {
    let ttl = Duration::from_secs(body.ttl_s.unwrap_or(authority::MAX_TTL.as_secs()));
    if ttl.is_zero() || ttl > authority::MAX_TTL {
        return Err(Problem::bad_input(
            "ttl_s",
            format!(
                "a joining bundle is valid for at most 24h ({} s), and at least 1 s",
                authority::MAX_TTL.as_secs()
            ),
        ));
    }
    require_leader(backend)?;
    let setup_port = match backend.setup_addr() {
        Some(addr) => addr.port(),
        None => backend
            .store()
            .and_then(authority::setup_port_from_settings)
            .map_err(unavailable)?,
    };
    let data = backend.data_dir().map_err(failure)?;
    let store = backend.store().map_err(failure)?;
    // No licence, or an expired one, is the cluster's state, not a passing outage: 409.
    let now_ms = authority::ms(SystemTime::now());
    let refusal = match authority::current_licence(store).map_err(failure)? {
        None => Some(JoinRefusal::NoLicence),
        Some(l) if l.check_time(now_ms).is_err() => Some(JoinRefusal::LicenceExpired {
            at_ms: l.terms.expires_at_ms,
        }),
        Some(_) => None,
    };
    if let Some(refusal) = refusal {
        return Err(Problem::new(ProblemKind::Conflict, refusal.to_string()));
    }
    let bundle = authority::create_bundle(store, &data, setup_port, ttl, SystemTime::now())
        .map_err(unavailable)?;
    let file = zeroize::Zeroizing::new(bundle.encode());
    Ok(Reply::Bundle(Bundle {
        file_base64: base64::engine::general_purpose::STANDARD.encode(file.as_slice()),
        expires_at_ms: bundle.expires_at_ms,
    }))
}

pub(super) fn list_passwords(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    Ok(Reply::Passwords(
        config(backend)?
            .passwords
            .into_iter()
            .map(|(user, version)| PasswordEntry { user, version })
            .collect(),
    ))
}

pub(super) fn import_mastered(
    backend: &mut dyn Backend,
    body: ImportMastered,
) -> Result<Reply, Problem> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.bundle_base64.as_bytes())
        .map_err(|e| Problem::bad_input("bundle_base64", e.to_string()))?;
    if bytes.len() > crate::roster::MAX_BUNDLE {
        return Err(Problem::new(
            ProblemKind::TooLarge,
            format!(
                "a mastered bundle is at most {} bytes",
                crate::roster::MAX_BUNDLE
            ),
        ));
    }
    let store = backend.store().map_err(failure)?;
    let added = crate::roster::import(store, &bytes)
        .map_err(|e| Problem::bad_input("bundle_base64", e.to_string()))?;
    let members = crate::roster::admitted(store).map_err(|e| failure(e.into()))?;
    backend.roster_changed().map_err(failure)?;
    Ok(Reply::Imported(Imported {
        imported: added as u64,
        roster: members.iter().map(WriterId::to_hex).collect(),
    }))
}
