//! The admin commands of `meshward`: users, grants and certificate revocations (mastered),
//! backup and restore.
//!
//! Kept apart from [`crate::cli`] so that each command family has its own enum and function.

use std::fs;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::backup::{ArchiveReader, ArchiveWriter, BackupError};
use crate::certs::{Revoked, Serial};
use crate::cli::{Backend, Global};
use crate::disk::{create_new, exists_error, private_data_dir};
use crate::grants::{Grant, UserChange, UserName, Users};
use crate::mek::{MEK_FILE, Mek};
use crate::store::{STORE_FILE, Store, StoreError, create_private_dir};

/// `meshward user …`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create an admin user, with no grant (leader only).
    Create {
        /// The user name (also the CN of its certificates).
        name: String,
    },
    /// Give a user a grant: root, admin:NS, guest:NS or guest:* (leader only).
    Grant {
        /// The user.
        name: String,
        /// The grant.
        grant: String,
    },
    /// Take a grant back, or without GRANT delete the user (leader only).
    Revoke {
        /// The user.
        name: String,
        /// The grant to take back; omitted: delete the user.
        grant: Option<String>,
    },
    /// List users and their grants.
    List,
    /// Issue a client certificate for the admin API (leader only; needs DATA/mek): writes
    /// DIR/NAME.key (0600), DIR/NAME.crt (CN=NAME, signed by the cluster CA) and DIR/ca.crt
    /// (kept if it holds this CA already), and prints the certificate's serial (for `cert
    /// revoke`).
    Cert {
        /// The user (must exist).
        name: String,
        /// The directory to write to (created 0700 if missing). Existing files, and links, are
        /// refused: nothing is written then.
        #[arg(long)]
        out: PathBuf,
        /// How long the certificate is valid, e.g. 90d.
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        valid: std::time::Duration,
    },
}

/// `meshward cert …`
#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Revoke an admin API client certificate by its serial, whichever CA issued it (leader
    /// only); the API refuses it from the next request on, also on open connections.
    Revoke {
        /// The serial in hex, as `user cert` or `openssl x509 -serial` prints it (`:` allowed).
        serial: String,
    },
    /// List the revoked serials.
    Revoked,
}

/// `meshward backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The archive to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The MEK file (default: the node's, DATA/mek).
    #[arg(long)]
    pub mek: Option<PathBuf>,
}

/// `meshward restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive to restore.
    pub file: PathBuf,
    /// The MEK file the archive was sealed with.
    #[arg(long)]
    pub mek: PathBuf,
    /// Replace an existing store (atomically: the old one stays until the new one is complete).
    #[arg(long)]
    pub force: bool,
}

/// Plaintext bytes between two progress lines of a backup.
const PROGRESS_STEP: u64 = 64 << 20;

/// Runs `meshward user …`. Writes go through [`Backend::master`] (leader only).
pub fn user(
    g: &Global,
    cmd: UserCmd,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let change = match cmd {
        UserCmd::List => {
            let users = users(backend.store()?)?;
            if g.json {
                let list: Vec<_> = users
                    .iter()
                    .map(|(u, gs)| json!({"name": u.as_str(), "grants": gs.iter().map(Grant::to_string).collect::<Vec<_>>()}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(list))?;
            } else {
                for (u, gs) in users.iter() {
                    let grants: Vec<_> = gs.iter().map(Grant::to_string).collect();
                    writeln!(out, "{u} {}", grants.join(" "))?;
                }
            }
            return Ok(());
        }
        UserCmd::Cert {
            name,
            out: dir,
            valid,
        } => {
            return user_cert(g, &name, &dir, valid, backend, out);
        }
        UserCmd::Create { name } => UserChange::Create(name.parse()?),
        UserCmd::Grant { name, grant } => {
            UserChange::AddGrant(name.parse()?, grant.parse::<Grant>()?)
        }
        UserCmd::Revoke { name, grant: None } => UserChange::Delete(name.parse()?),
        UserCmd::Revoke {
            name,
            grant: Some(grant),
        } => UserChange::RevokeGrant(name.parse()?, grant.parse::<Grant>()?),
    };
    users(backend.store()?)?.check(&change)?;
    let (kind, payload) = change.encode();
    let version = backend.master(kind, payload)?;
    let (what, user): (String, &UserName) = match &change {
        UserChange::Create(u) => ("created user".into(), u),
        UserChange::AddGrant(u, gr) => (format!("granted {gr} to"), u),
        UserChange::RevokeGrant(u, gr) => (format!("revoked {gr} from"), u),
        UserChange::Delete(u) => ("deleted user".into(), u),
    };
    let text = format!("{what} {user} (mastered version {version})");
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"user": user.as_str(), "done": what, "version": version})
        )?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

/// Longest validity of a user certificate.
const MAX_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// Runs `meshward user cert`: a fresh key and a client certificate with CN=NAME from the
/// cluster CA (opened with the MEK, on the leader), written with the CA certificate.
fn user_cert(
    g: &Global,
    name: &str,
    dir: &Path,
    valid: std::time::Duration,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let user: UserName = name.parse()?;
    if valid.is_zero() || valid > MAX_CERT_VALIDITY {
        bail!("--valid must be more than zero and at most 10 years");
    }
    let data = backend.data_dir()?;
    let store = backend.store()?;
    if users(store)?.grants(&user).is_none() {
        bail!("no user {user}; create it first with `meshward user create {user}`");
    }
    let chain = crate::cluster::require_leader(store)?;
    let mek = crate::cluster::load_mek(&data)?;
    let ca = crate::cluster::open_ca(store, chain.cluster(), &mek)?;
    let now = std::time::SystemTime::now();
    let issued = ca.issue_client(user.as_str(), now, now + valid)?;
    create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join(format!("{user}.key"));
    let cert_path = dir.join(format!("{user}.crt"));
    let ca_path = dir.join("ca.crt");
    let key_der = pem::Pem::new("PRIVATE KEY", issued.key.to_vec());
    let key_pem = zeroize::Zeroizing::new(pem::encode(&key_der));
    // The PEM wrapper's copy of the key is wiped too.
    drop(zeroize::Zeroizing::new(key_der.into_contents()));
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", issued.cert.clone()));
    let ca_pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca.cert.clone()));
    let mut files = vec![
        (key_path.as_path(), key_pem.as_bytes(), 0o600),
        (cert_path.as_path(), cert_pem.as_bytes(), 0o644),
    ];
    // Several users' files may share a directory: a ca.crt that holds this CA is kept.
    let keep_ca = fs::symlink_metadata(&ca_path).is_ok()
        && crate::disk::holds_exactly(&ca_path, ca_pem.as_bytes())
            .context("the certificate files were not written")?;
    if !keep_ca {
        files.push((ca_path.as_path(), ca_pem.as_bytes(), 0o644));
    }
    write_all_new(&files).context("the certificate files were not written")?;
    let serial = Serial::of_certificate(&issued.cert).context("the new certificate")?;
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"user": user.as_str(), "key": key_path, "cert": cert_path, "ca": ca_path, "serial": serial.to_string()})
        )?;
    } else {
        writeln!(
            out,
            "wrote {} (private, 0600), {} and {} for user {user}; serial {serial}",
            key_path.display(),
            cert_path.display(),
            ca_path.display()
        )?;
    }
    Ok(())
}

/// Writes each `(path, bytes, mode)` to a new file ([`create_new`]: never over a file or
/// through a link). All files are created before any is written, and if one cannot be, those
/// created are removed: either all are written or none.
fn write_all_new(files: &[(&Path, &[u8], u32)]) -> std::io::Result<()> {
    let mut created: Vec<(&Path, fs::File)> = Vec::new();
    let result = (|| {
        for (path, _, mode) in files {
            created.push((path, create_new(path, *mode)?));
        }
        for ((_, file), (path, bytes, _)) in created.iter_mut().zip(files) {
            file.write_all(bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
                })?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (path, file) in created {
            drop(file);
            let _ = fs::remove_file(path);
        }
    }
    result
}

/// Runs `meshward cert …`. Revocations go through [`Backend::master`] (leader only).
pub fn cert(
    g: &Global,
    cmd: CertCmd,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cmd {
        CertCmd::Revoke { serial } => {
            let serial: Serial = serial.parse()?;
            access(backend.store()?)?.revoked.check(&serial)?;
            let (kind, payload) = serial.revocation();
            let version = backend.master(kind, payload)?;
            if g.json {
                writeln!(
                    out,
                    "{}",
                    json!({"revoked": serial.to_string(), "version": version})
                )?;
            } else {
                writeln!(
                    out,
                    "revoked certificate serial {serial} (mastered version {version})"
                )?;
            }
        }
        CertCmd::Revoked => {
            let revoked = access(backend.store()?)?.revoked;
            if g.json {
                let list: Vec<_> = revoked
                    .iter()
                    .map(|(s, v)| json!({"serial": s.to_string(), "version": v}))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(list))?;
            } else {
                for (serial, version) in revoked.iter() {
                    writeln!(out, "{serial} (mastered version {version})")?;
                }
            }
        }
    }
    Ok(())
}

/// What the admin API decides on: the users and the revoked certificate serials of the
/// node's verified mastered chain.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Users and their grants.
    pub users: Users,
    /// Revoked client certificates.
    pub revoked: Revoked,
}

/// The users view of the node's verified mastered chain (empty before any cluster).
pub fn users(store: &Store) -> anyhow::Result<Users> {
    Ok(access(store)?.users)
}

/// The users and revoked serials of the node's verified mastered chain (empty before any
/// cluster).
pub fn access(store: &Store) -> anyhow::Result<Access> {
    let Some(anchor) = store.anchor()? else {
        return Ok(Access::default());
    };
    let (_, verified) = meshward_crdt::mastered::Chain::replay(anchor, &store.mastered_records()?)?;
    Ok(Access {
        users: Users::fold(&verified)?,
        revoked: Revoked::fold(&verified)?,
    })
}

/// Runs `meshward backup`: a consistent snapshot of the store (one read transaction, so a
/// running daemon keeps writing), sealed under the MEK, written to a private temporary file
/// that is renamed to `--out` only when complete.
pub fn backup(
    g: &Global,
    args: BackupArgs,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if fs::symlink_metadata(&args.out).is_ok() {
        return Err(exists_error(&args.out)).context("choose a new file name for the backup");
    }
    let data = backend.data_dir()?;
    let mek_path = args.mek.unwrap_or_else(|| data.join(MEK_FILE));
    let mek = Mek::load(&mek_path).with_context(|| {
        format!(
            "the backup is sealed with the MEK; give its file with --mek (looked in {})",
            mek_path.display()
        )
    })?;
    let store = backend.store()?;
    let cluster = store.identity()?.cluster;
    let estimate = fs::metadata(data.join(STORE_FILE)).map_or(0, |m| m.len());
    let tmp = partial_path(&args.out);
    let result = (|| -> anyhow::Result<crate::backup::SnapshotStats> {
        let file = create_new(&tmp, 0o600)?;
        let mut archive = ArchiveWriter::new(BufWriter::new(file), &mek, cluster.0)?;
        let mut next = PROGRESS_STEP;
        let started = std::time::Instant::now();
        let stats = crate::backup::write_snapshot(store.reader(), &mut archive, &mut |bytes| {
            if bytes >= next {
                next += PROGRESS_STEP;
                eprintln!(
                    "backup: {} MiB written (store file {} MiB), {:.0} s",
                    bytes >> 20,
                    estimate >> 20,
                    started.elapsed().as_secs_f64()
                );
            }
        })?;
        let file = archive.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(stats)
    })();
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            if says_disk_full(&e) {
                let dir = match args.out.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                bail!(
                    "disk full: the backup {} could not be written: {} has no space left; the \
                     partial file was removed (free some space there, or give --out on another \
                     filesystem)",
                    args.out.display(),
                    dir.display()
                );
            }
            return Err(e.context(format!("writing the backup {}", args.out.display())));
        }
    };
    if let Err(e) = crate::disk::publish(&tmp, &args.out) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("moving the backup to {}", args.out.display()));
    }
    sync_parent(&args.out)?;
    let size = fs::metadata(&args.out).map_or(0, |m| m.len());
    let text = format!(
        "backup of {} tables, {} rows written to {} ({size} bytes)",
        stats.tables,
        stats.rows,
        args.out.display()
    );
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"file": args.out.display().to_string(), "tables": stats.tables, "rows": stats.rows, "bytes": size})
        )?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

/// Runs `meshward restore`: opens the archive with the MEK into a private temporary store
/// beside the target, and only when every chunk opened and the snapshot is complete, fsyncs it
/// and renames it over `DATA/meshward.redb`. Any failure leaves the data directory as it was.
pub fn restore(
    g: &Global,
    args: RestoreArgs,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if backend.mesh().is_some() {
        bail!("a daemon runs on this data directory; stop it before restoring into it");
    }
    let data = &g.data;
    let target = data.join(STORE_FILE);
    if target.exists() {
        if !args.force {
            bail!(
                "{} holds a store; restore refuses to replace it (add --force to replace it, or restore into a new --data directory)",
                target.display()
            );
        }
        // Refuses a store another process (a daemon) holds, and anything that is not a store.
        drop(Store::open(data).context("checking the store to replace")?);
    }
    let mek = Mek::load(&args.mek)?;
    let file = fs::File::open(&args.file)
        .with_context(|| format!("opening the backup {}", args.file.display()))?;
    private_data_dir(data).with_context(|| format!("creating {}", data.display()))?;
    let tmp = data.join(format!(".{STORE_FILE}.restore"));
    let result = (|| -> Result<crate::backup::SnapshotStats, BackupError> {
        let _ = fs::remove_file(&tmp); // a leftover of an interrupted restore
        create_new(&tmp, 0o600)?;
        let db = crate::disk::open_database(&tmp).map_err(StoreError::from)?;
        let mut reader = ArchiveReader::new(BufReader::new(file), &mek)?;
        let stats = crate::backup::read_snapshot(&db, &mut reader)?;
        drop(db);
        fs::File::open(&tmp)?.sync_all()?;
        Ok(stats)
    })();
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(anyhow::Error::new(e).context(format!(
                "restoring {} (the data directory was left as it was)",
                args.file.display()
            )));
        }
    };
    // The restored file must be a store this build opens, before it replaces anything.
    if let Err(e) = check_store_file(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &target).with_context(|| format!("replacing {}", target.display()))?;
    sync_parent(&target)?;
    let mek_file = data.join(MEK_FILE);
    let mek_note = if mek_file.exists() {
        "kept the node's MEK file"
    } else {
        mek.write_new(&mek_file)?;
        "installed the MEK file"
    };
    let text = format!(
        "restored {} tables, {} rows into {}; {mek_note}",
        stats.tables,
        stats.rows,
        target.display()
    );
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"store": target.display().to_string(), "tables": stats.tables, "rows": stats.rows})
        )?;
    } else {
        writeln!(out, "{text}")?;
    }
    Ok(())
}

/// Opens a restored file as a store in a scratch directory (via a hard link) to check it.
fn check_store_file(path: &Path) -> anyhow::Result<()> {
    let dir = path.with_extension("check");
    let _ = fs::remove_dir_all(&dir);
    create_private_dir(&dir)?;
    let linked = dir.join(STORE_FILE);
    let result = fs::hard_link(path, &linked)
        .context("checking the restored store")
        .and_then(|()| {
            let store = Store::open(&dir).context("the restored store does not open")?;
            store
                .identity()
                .context("the restored store has no identity")?;
            Ok(())
        });
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Whether `e` (or an error it wraps) says a disk is full (ENOSPC).
fn says_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", parent.display()))
}
