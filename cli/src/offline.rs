//! The admin commands of `meshward`: users, grants and certificate revocations (mastered),
//! backup and restore.
//!

use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::args::{BackupArgs, Global, RestoreArgs};
use meshward_node::backup::{ArchiveReader, BackupError};
use meshward_node::disk::{create_new, exists_error, private_data_dir};
use meshward_node::mek::{MEK_FILE, Mek};
use meshward_node::ops::Backend;
use meshward_node::store::{STORE_FILE, Store, StoreError, create_private_dir};

/// Plaintext bytes between two progress lines of a backup.
const PROGRESS_STEP: u64 = 64 << 20;

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
    let estimate = fs::metadata(data.join(STORE_FILE)).map_or(0, |m| m.len());
    let tmp = partial_path(&args.out);
    let mut next = PROGRESS_STEP;
    let started = std::time::Instant::now();
    let result = meshward_node::backup::seal_to_file(store, &mek, &tmp, &mut |bytes| {
        if bytes >= next {
            next += PROGRESS_STEP;
            eprintln!(
                "backup: {} MiB written (store file {} MiB), {:.0} s",
                bytes >> 20,
                estimate >> 20,
                started.elapsed().as_secs_f64()
            );
        }
    })
    .map_err(anyhow::Error::from);
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
    if let Err(e) = meshward_node::disk::publish(&tmp, &args.out) {
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
    let result = (|| -> Result<meshward_node::backup::SnapshotStats, BackupError> {
        let _ = fs::remove_file(&tmp); // a leftover of an interrupted restore
        create_new(&tmp, 0o600)?;
        let db = meshward_node::disk::open_database(&tmp).map_err(StoreError::from)?;
        let mut reader = ArchiveReader::new(BufReader::new(file), &mek)?;
        let stats = meshward_node::backup::read_snapshot(&db, &mut reader)?;
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
pub(crate) fn says_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
    })
}

pub(crate) fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    out.with_file_name(name)
}

pub(crate) fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", parent.display()))
}
