//! How a command runs: it becomes one [`Request`] (or a few: the pages of a listing), sent to
//! the node through the API client (the local daemon's socket, or `--remote` over HTTPS), or,
//! when no daemon runs, executed on the store directly with the same [`ops::execute`]. The
//! CLI resolves every file it is given itself: it reads input files and writes output files
//! (0600, never through a symlink, never over an existing file), so relative paths mean the
//! caller's working directory wherever the node runs.

use std::io::Write;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use meshward_api::cluster::{
    ChangePassword, CreateBundle, ImportMastered, InstallLicence, IssueCertificate,
    RevokeCertificate,
};
use meshward_api::local::{AuditQuery, NewAudit, RecordAudit};
use meshward_api::node::{AdoptRecord, Demote, Failover, HealthQuery, MakeStandalone};
use meshward_api::shared::{AppendEvents, Approve, EventQuery, HostKey, NewEvent};
use meshward_api::{FaultRequest, Reply, Request};

use crate::args::{
    AuditCmd, BundleCmd, CertCmd, Cli, Command, ConfigCmd, EventCmd, ExceptionCmd, FaultCmd,
    FingerprintCmd, Global, HaCmd, LicenceCmd, LocalCmd, MasteredCmd, PasswordCmd, UserCmd,
};
use crate::args::{CredentialCmd, TableCmd};
use crate::door::Door;
use crate::render::render;
use meshward_node::disk::read_bounded;
use meshward_node::ops::{self};

/// How long the bundle `ha initialise` sends the secondary is valid.
const PAIRING_BUNDLE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs a command that is a request to the node; writes what it shows to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let g = cli.global;
    let mut door = Door::new(&g)?;
    // Parse everything the command needs before anything is sent: bad input changes nothing.
    let request = match cli.command {
        Command::Event(EventCmd::List {
            writer,
            since,
            until,
            kind,
            limit,
        }) => {
            let query = EventQuery {
                writer,
                since,
                until,
                kind,
                limit: None,
                after: None,
            };
            return list_events(&mut door, &g, query, limit, out);
        }
        Command::Watch { tables, from, json } => {
            return door.watch(tables.as_deref(), from.as_deref(), |event| {
                crate::render::watch_line(&event, json, out)
            });
        }
        Command::Audit(AuditCmd::Record { stdin: true, .. }) => {
            return audit_stdin(&mut door, &g, out);
        }
        Command::User(UserCmd::Cert {
            name,
            out: dir,
            valid,
        }) => {
            let days = u32::try_from(valid.as_secs().div_ceil(86_400)).unwrap_or(u32::MAX);
            let reply = door.send(Request::IssueCertificate {
                name,
                body: IssueCertificate {
                    valid_days: Some(days),
                },
            })?;
            return crate::files::write_certificate(&g, &dir, reply, out);
        }
        Command::Ha(HaCmd::Initialise { joining_code }) => {
            let reply = door.send(Request::CreateBundle(CreateBundle {
                ttl_s: Some(PAIRING_BUNDLE_TTL.as_secs()),
            }))?;
            return crate::files::initialise(&g, &joining_code, reply, out);
        }
        Command::Ha(HaCmd::MakeStandalone { node: None }) if !door.daemon() => {
            return crate::files::leave_offline(&g, out);
        }
        Command::Bundle(BundleCmd::Create { ttl, out: path }) => {
            let reply = door.send(Request::CreateBundle(CreateBundle {
                ttl_s: Some(ttl.as_secs()),
            }))?;
            return crate::files::write_bundle(&g, &path, reply, out);
        }
        command => request_of(command)?,
    };
    let shown = request.clone();
    let reply = door.send(request)?;
    // A password that does not match, or expired, fails the command (after showing why).
    let refused = match &reply {
        Reply::PasswordChecked(c) if !c.valid => Some("the password does not match"),
        Reply::PasswordChecked(c) if c.expired => Some("the password is right but expired"),
        Reply::FingerprintChecked(c) if c.decision == "deny" => {
            Some("this node denies the host key")
        }
        Reply::AuditMeshVerified(v) if !v.agreed => Some(
            "peers hold another head of this node's audit: it was rewritten or cut after they \
             took it",
        ),
        Reply::AuditMeshVerified(v) if !v.intact => {
            Some("the audit chain is broken: run `meshward audit verify`")
        }
        _ => None,
    };
    let unhealthy = matches!(&reply, Reply::Health(h) if !h.healthy);
    render(&g, &shown, reply, out)?;
    if let Some(why) = refused {
        bail!("{why}");
    }
    if unhealthy {
        bail!("the node is not healthy");
    }
    Ok(())
}

/// The request of a command that is one request.
fn request_of(command: Command) -> anyhow::Result<Request> {
    Ok(match command {
        Command::Event(EventCmd::Append {
            kind,
            user,
            target,
            detail,
            at,
            count,
        }) => {
            let event = NewEvent {
                kind,
                user,
                target,
                detail,
                at_ms: Some(at.unwrap_or_else(ops::now_ms)),
            };
            let events = if count == 1 {
                vec![event]
            } else {
                (0..count)
                    .map(|i| NewEvent {
                        detail: format!("{} #{i}", event.detail),
                        ..event.clone()
                    })
                    .collect()
            };
            Request::AppendEvents(AppendEvents { events })
        }
        Command::Fingerprint(FingerprintCmd::Add { key, at }) => {
            Request::ObserveFingerprint(meshward_api::shared::ObserveFingerprint {
                key: host_key(key),
                at_ms: at,
            })
        }
        Command::Fingerprint(FingerprintCmd::List) => Request::ListFingerprints,
        Command::Fingerprint(FingerprintCmd::Check { key }) => {
            Request::CheckFingerprint(host_key(key))
        }
        Command::Fingerprint(FingerprintCmd::Approve { key, withdraw }) => {
            Request::Approve(Approve {
                key: host_key(key),
                approved: !withdraw,
            })
        }
        Command::Exception(ExceptionCmd::Set { user, field, value }) => {
            Request::SetException { user, field, value }
        }
        Command::Exception(ExceptionCmd::Delete { user, field }) => {
            Request::DeleteException { user, field }
        }
        Command::Exception(ExceptionCmd::List) => Request::ListExceptions,
        Command::Audit(AuditCmd::Record {
            actor,
            action,
            target,
            detail,
            ..
        }) => Request::RecordAudit(RecordAudit {
            records: vec![NewAudit {
                actor: actor.unwrap_or_default(),
                action: action.unwrap_or_default(),
                target: target.unwrap_or_default(),
                detail,
            }],
        }),
        Command::Audit(AuditCmd::List { from, limit }) => Request::ListAudit(AuditQuery {
            from: Some(from),
            limit: Some(limit),
        }),
        Command::Audit(AuditCmd::Verify {
            against_mesh: false,
        }) => Request::VerifyAudit,
        Command::Audit(AuditCmd::Verify { against_mesh: true }) => Request::VerifyAuditAgainstMesh,
        Command::Local(LocalCmd::Set { name, value }) => Request::SetLocal { name, value },
        Command::Local(LocalCmd::List) => Request::ListLocal,
        Command::Local(LocalCmd::Get { name }) => Request::GetLocal { name },
        Command::Config(ConfigCmd::Set { key, value }) => Request::SetConfig { key, value },
        Command::Config(ConfigCmd::Unset { key }) => Request::UnsetConfig { key },
        Command::Config(ConfigCmd::Get { key }) => Request::GetConfig { key },
        Command::Config(ConfigCmd::List) => Request::ListConfig,
        Command::Table(cmd) => table_request(cmd)?,
        Command::Credential(cmd) => credential_request(cmd)?,
        Command::Ha(HaCmd::Demote { to }) => Request::Demote(Demote { to }),
        Command::Ha(HaCmd::Status) => Request::Ha,
        Command::Ha(HaCmd::Failback) => Request::Failback,
        Command::Ha(HaCmd::Failover { force }) => Request::Failover(Failover { force }),
        Command::Ha(HaCmd::Superseded) => Request::Superseded,
        Command::Ha(HaCmd::Adopt { hash }) => Request::Adopt(AdoptRecord {
            hash,
            record_base64: None,
        }),
        Command::Ha(HaCmd::Log { limit }) => {
            Request::HaLog(meshward_api::node::HaLogQuery { limit: Some(limit) })
        }
        Command::Ha(HaCmd::MakeStandalone { node }) => {
            Request::MakeStandalone(MakeStandalone { node })
        }
        Command::Ha(HaCmd::CreateJoiningCode(_) | HaCmd::Initialise { .. }) => {
            bail!("this command is run by the binary on its own")
        }
        Command::Password(PasswordCmd::Change { user }) => Request::ChangePassword {
            user,
            body: ChangePassword {
                password: read_password()?,
            },
        },
        Command::Password(PasswordCmd::List) => Request::ListPasswords,
        Command::Password(PasswordCmd::Verify { user }) => Request::VerifyPassword {
            user,
            body: ChangePassword {
                password: read_password()?,
            },
        },
        Command::Status => Request::Status,
        Command::Health { max_lag_ms } => Request::Health(HealthQuery { max_lag_ms }),
        Command::User(UserCmd::List) => Request::ListUsers,
        Command::User(UserCmd::Create { name }) => Request::CreateUser { name },
        Command::User(UserCmd::Grant { name, grant }) => Request::Grant { name, grant },
        Command::User(UserCmd::Revoke { name, grant: None }) => Request::DeleteUser { name },
        Command::User(UserCmd::Revoke {
            name,
            grant: Some(grant),
        }) => Request::RevokeGrant { name, grant },
        Command::Cert(CertCmd::Revoke { serial }) => {
            Request::RevokeCertificate(RevokeCertificate { serial })
        }
        Command::Cert(CertCmd::Revoked) => Request::ListRevoked,
        Command::Licence(LicenceCmd::Install { file }) => {
            let bytes = read_bounded(&file, meshward_node::licence::MAX_LICENCE_FILE)?;
            let licence = String::from_utf8(bytes)
                .with_context(|| format!("the licence file {} is not text", file.display()))?;
            Request::InstallLicence(InstallLicence { licence })
        }
        Command::Licence(LicenceCmd::Show) => Request::GetLicence,
        Command::Licence(LicenceCmd::Keygen { .. } | LicenceCmd::Issue { .. }) => {
            bail!("this command is run by the binary on its own")
        }
        Command::Mastered(MasteredCmd::Import { file }) => {
            let bytes = read_bounded(&file, meshward_node::roster::MAX_BUNDLE)?;
            Request::ImportMastered(ImportMastered {
                bundle_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            })
        }
        Command::Fault(f) => Request::Fault(fault(f)?),
        Command::Event(_)
        | Command::User(_)
        | Command::Bundle(_)
        | Command::Run(_)
        | Command::Init(_)
        | Command::Join(_)
        | Command::Demo(_)
        | Command::Backup(_)
        | Command::Restore(_)
        | Command::Unseal(_)
        | Command::Watch { .. }
        | Command::Openapi
        | Command::Wait { .. }
        | Command::Completions { .. }
        | Command::Man => bail!("this command is run by the binary on its own"),
    })
}

fn host_key(key: crate::args::HostKey) -> HostKey {
    HostKey {
        host: key.host,
        key_type: key.key_type,
        fingerprint: key.fingerprint,
    }
}

fn fault(f: FaultCmd) -> anyhow::Result<FaultRequest> {
    Ok(match f {
        FaultCmd::Block { peers } => FaultRequest::Block { peers },
        FaultCmd::Heal => FaultRequest::Heal,
        FaultCmd::Delay { ms, peers } => FaultRequest::Delay {
            peers,
            min_ms: ms.min.as_millis() as u64,
            max_ms: ms.max.as_millis() as u64,
        },
        FaultCmd::Misbehave { kind } => FaultRequest::Misbehave { kind },
    })
}

/// `event list`: every page, up to `limit` events.
fn list_events(
    door: &mut Door,
    g: &Global,
    mut query: EventQuery,
    limit: Option<usize>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    loop {
        let left = limit.map(|l| l.saturating_sub(rows.len()));
        if left == Some(0) {
            break;
        }
        query.limit = left.map(|l| l.min(meshward_api::shared::MAX_EVENT_PAGE));
        let Reply::Events(page) = door.send(Request::ListEvents(query.clone()))? else {
            bail!("the node answered something else than events");
        };
        rows.extend(page.events);
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    crate::render::events(g, &rows, out)
}

/// The new password of `password change`, read from stdin (one line, bounded).
pub fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead as _, Read as _};
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .take(meshward_node::core::MAX_PASSWORD as u64 + 2)
        .read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "give the new password on stdin (one line)"
    );
    Ok(password)
}

/// `audit record --stdin`: `actor TAB action TAB target TAB detail` lines, each answered `ack
/// SEQ` once durable. Through a running daemon, lines are sent in batches as they come;
/// without one, the store's group committer writes them.
fn audit_stdin(door: &mut Door, g: &Global, out: &mut dyn Write) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    if !door.daemon() {
        let store = meshward_node::store::Store::open(&g.data)
            .with_context(|| format!("opening the store in {}", g.data.display()))?;
        return meshward_node::audit::run_stdin_writer(
            store.db()?,
            std::io::BufReader::new(std::io::stdin()),
            out,
        );
    }
    let stdin = std::io::stdin();
    let mut batch = Vec::new();
    let mut flush = |batch: &mut Vec<meshward_api::local::NewAudit>,
                     out: &mut dyn Write|
     -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(batch);
        let reply = door.send(meshward_api::Request::RecordAudit(
            meshward_api::local::RecordAudit { records },
        ))?;
        if let meshward_api::Reply::Recorded(r) = reply {
            for seq in r.first_seq..=r.last_seq {
                writeln!(out, "ack {seq}")?;
            }
            out.flush()?;
        }
        Ok(())
    };
    for line in stdin.lock().lines() {
        let line = line?;
        let mut fields = line.splitn(4, '\t');
        let (Some(actor), Some(action), Some(target)) =
            (fields.next(), fields.next(), fields.next())
        else {
            bail!("a line must be actor TAB action TAB target [TAB detail]: {line:?}");
        };
        batch.push(meshward_api::local::NewAudit {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail: fields.next().unwrap_or_default().into(),
        });
        if batch.len() >= 1024 {
            flush(&mut batch, out)?;
        }
    }
    flush(&mut batch, out)
}

/// The request of a `meshward table …` command.
/// The request of a `credential` command; a secret is read from stdin.
fn credential_request(cmd: CredentialCmd) -> anyhow::Result<Request> {
    use meshward_api::credentials::{
        ConflictQuery, RevealCredential, RotateCredential, SetCredential,
    };
    let split = |address: &str| -> anyhow::Result<(String, String, String)> {
        match address.split('/').collect::<Vec<_>>()[..] {
            [ns, device, account] => Ok((ns.into(), device.into(), account.into())),
            _ => bail!("address: write it NAMESPACE/DEVICE/ACCOUNT, e.g. ns1/db-01/root"),
        }
    };
    Ok(match cmd {
        CredentialCmd::Set { address, reason } => {
            let (namespace, device, account) = split(&address)?;
            Request::SetCredential {
                namespace,
                device,
                account,
                body: SetCredential {
                    secret: read_secret()?,
                    reason,
                },
            }
        }
        CredentialCmd::Rotate {
            address,
            stdin,
            length,
            alphabet,
            reason,
        } => {
            let (namespace, device, account) = split(&address)?;
            Request::RotateCredential {
                namespace,
                device,
                account,
                body: RotateCredential {
                    secret: if stdin { Some(read_secret()?) } else { None },
                    length,
                    alphabet,
                    reason,
                },
            }
        }
        CredentialCmd::Reveal { address, version } => {
            let (namespace, device, account) = split(&address)?;
            Request::RevealCredential {
                namespace,
                device,
                account,
                body: RevealCredential { version },
            }
        }
        CredentialCmd::History { address } => {
            let (namespace, device, account) = split(&address)?;
            Request::CredentialHistory {
                namespace,
                device,
                account,
            }
        }
        CredentialCmd::Conflicts { namespace } => {
            Request::CredentialConflicts(ConflictQuery { namespace })
        }
    })
}

/// A secret read from stdin (one line, bounded); never from the command line.
fn read_secret() -> anyhow::Result<String> {
    use std::io::{BufRead as _, Read as _};
    let max = meshward_api::credentials::MAX_SECRET;
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .take(max as u64 + 2)
        .read_line(&mut line)?;
    let secret = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        !secret.is_empty(),
        "secret: give the secret on stdin (one line)"
    );
    anyhow::ensure!(
        secret.len() <= max,
        "secret: at most {max} bytes on one line"
    );
    Ok(secret.to_string())
}

fn table_request(cmd: TableCmd) -> anyhow::Result<Request> {
    Ok(match cmd {
        TableCmd::Put {
            namespace,
            table,
            key,
            document,
        } => Request::PutRow {
            namespace,
            table,
            key,
            document: serde_json::from_str(&document)
                .context("the document is not JSON; quote it, e.g. '{\"port\": 22}'")?,
        },
        TableCmd::Delete {
            namespace,
            table,
            key,
        } => Request::DeleteRow {
            namespace,
            table,
            key,
        },
        TableCmd::Get {
            namespace,
            table,
            key,
        } => Request::GetRow {
            namespace,
            table,
            key,
        },
        TableCmd::List {
            namespace,
            table: None,
            ..
        } => Request::ListTables { namespace },
        TableCmd::List {
            namespace,
            table: Some(table),
            limit,
            after,
        } => Request::ListRows {
            namespace,
            table,
            query: meshward_api::managed::RowQuery { limit, after },
        },
    })
}
