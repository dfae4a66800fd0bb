//! Files the CLI writes from a reply: a user's certificate, key and the CA certificate, a
//! joining bundle. Each is created new (never over an existing file, never through a symlink:
//! `O_CREAT|O_EXCL`), secrets 0600, and synced; on a failure the files already written are
//! removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use meshward_api::Reply;
use serde_json::json;
use zeroize::Zeroizing;

use crate::args::Global;
use meshward_node::disk::create_new;
use meshward_node::store::create_private_dir;

/// Writes each `(path, bytes, mode)` to a new file ([`create_new`]: never over a file or
/// through a link). All files are created before any is written, and if one cannot be, those
/// created are removed: either all are written or none.
fn write_all_new(files: &[(PathBuf, &[u8], u32)]) -> anyhow::Result<()> {
    let mut created: Vec<(&Path, std::fs::File)> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for (path, _, mode) in files {
            let file =
                create_new(path, *mode).with_context(|| format!("creating {}", path.display()))?;
            created.push((path, file));
        }
        for ((_, file), (path, bytes, _)) in created.iter_mut().zip(files) {
            file.write_all(bytes)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (path, file) in created {
            drop(file);
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// `user cert --out DIR`: DIR/NAME.key (0600), DIR/NAME.crt and DIR/ca.crt.
pub fn write_certificate(
    g: &Global,
    dir: &Path,
    reply: Reply,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let Reply::Certificate(c) = reply else {
        bail!("the node answered something else than a certificate");
    };
    create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join(format!("{}.key", c.user));
    let cert_path = dir.join(format!("{}.crt", c.user));
    let ca_path = dir.join("ca.crt");
    let key = Zeroizing::new(c.key_pem.clone());
    let mut files = vec![
        (key_path.clone(), key.as_bytes(), 0o600),
        (cert_path.clone(), c.certificate_pem.as_bytes(), 0o644),
    ];
    // Several users' files may share a directory: a ca.crt that holds this CA is kept.
    let keep_ca = std::fs::symlink_metadata(&ca_path).is_ok()
        && meshward_node::disk::holds_exactly(&ca_path, c.ca_pem.as_bytes())
            .context("the certificate files were not written")?;
    if !keep_ca {
        files.push((ca_path.clone(), c.ca_pem.as_bytes(), 0o644));
    }
    write_all_new(&files).context("the certificate files were not written")?;
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"user": c.user, "key": key_path, "cert": cert_path, "ca": ca_path, "serial": c.serial})
        )?;
    } else {
        writeln!(
            out,
            "wrote {} (private, 0600), {} and {} for user {}; serial {}",
            key_path.display(),
            cert_path.display(),
            ca_path.display(),
            c.user,
            c.serial
        )?;
    }
    Ok(())
}

/// `bundle create --out FILE`: the joining bundle, 0600.
pub fn write_bundle(
    g: &Global,
    path: &Path,
    reply: Reply,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let Reply::Bundle(b) = reply else {
        bail!("the node answered something else than a joining bundle");
    };
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b.file_base64.as_bytes())
            .context("the joining bundle in the answer is not base64")?,
    );
    write_all_new(&[(path.to_path_buf(), bytes.as_slice(), 0o600)])?;
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"file": path.display().to_string(), "expires_at_ms": b.expires_at_ms})
        )?;
    } else {
        writeln!(
            out,
            "wrote joining bundle {}; valid until {} or until the next `meshward bundle create`; \
             use it once with `meshward join --bundle {} --mek MEK_FILE --address ADDR`",
            path.display(),
            meshward_node::join::utc(b.expires_at_ms),
            path.display()
        )?;
    }
    Ok(())
}

/// `backup --out FILE`: through a running node, the archive it streams (sealed with its own
/// MEK); without one, written from the store here. Written to a private temporary file beside
/// FILE and renamed when complete; a failure leaves nothing behind.
pub fn backup(
    g: &Global,
    args: crate::args::BackupArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use crate::offline::{partial_path, says_disk_full, sync_parent};
    if crate::door::taken(&args.out) {
        bail!(
            "{} exists; choose a new file name for the backup",
            args.out.display()
        );
    }
    let mut door = crate::door::Door::new(g)?;
    if !door.daemon() {
        let mut backend = meshward_node::ops::LocalBackend::new(g.data.clone());
        return crate::offline::backup(g, args, &mut backend, out);
    }
    if args.mek.is_some() {
        bail!("a running node seals the backup with its own MEK (DATA/mek); leave out --mek");
    }
    let tmp = partial_path(&args.out);
    let result = (|| -> anyhow::Result<u64> {
        let mut file = std::io::BufWriter::new(
            create_new(&tmp, 0o600).with_context(|| format!("creating {}", tmp.display()))?,
        );
        let written = door
            .download("/v1/backup", &mut file)?
            .context("the node stopped before the backup")?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(written)
    })();
    let size = match result {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if says_disk_full(&e) {
                let dir = args
                    .out
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
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
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("moving the backup to {}", args.out.display()));
    }
    sync_parent(&args.out)?;
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"file": args.out.display().to_string(), "bytes": size})
        )?;
    } else {
        writeln!(
            out,
            "backup written to {} ({size} bytes)",
            args.out.display()
        )?;
    }
    Ok(())
}

/// `ha make-standalone` with no daemon running: the node becomes standalone here, without the
/// leader (see [`meshward_node::standalone::leave_offline`]).
pub fn leave_offline(g: &Global, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = meshward_node::store::Store::open(&g.data)
        .with_context(|| format!("opening the store in {}", g.data.display()))?;
    let (left, address) = meshward_node::standalone::leave_offline(&g.data, &store)?;
    if g.json {
        writeln!(
            out,
            "{}",
            json!({"left": left.old.to_hex(), "cluster": left.new.to_hex(), "backup": left.backup.display().to_string()})
        )?;
    } else {
        writeln!(
            out,
            "this node left cluster {} without its leader and now runs standalone as cluster {}; \
             the old cluster's data is in {}.\n\
             The old cluster still lists this node: remove it there with \
             `meshward ha make-standalone --node {address}` on its leader.",
            left.old.to_hex(),
            left.new.to_hex(),
            left.backup.display()
        )?;
    }
    Ok(())
}

/// `ha initialise`: the bundle the node made (`reply`) and the MEK of `DATA/mek`, sealed to the
/// secondary's joining code and delivered to it; shows the secondary's answer.
pub fn initialise(g: &Global, code: &str, reply: Reply, out: &mut dyn Write) -> anyhow::Result<()> {
    let Reply::Bundle(bundle) = reply else {
        bail!("unexpected answer from the node: {reply:?}");
    };
    let file = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(&bundle.file_base64)
            .context("the node's bundle is not base64")?,
    );
    let mek_path = g.data.join(meshward_node::mek::MEK_FILE);
    let mek = meshward_node::mek::Mek::load(&mek_path).with_context(|| {
        format!(
            "ha initialise sends the cluster's MEK to the secondary; run it where the \
             primary's data directory is ({} is missing or unreadable)",
            mek_path.display()
        )
    })?;
    let answer = meshward_daemon::pairing::initialise(code, &file, &mek)?;
    if g.json {
        writeln!(out, "{}", json!({"initialised": true, "secondary": answer}))?;
    } else {
        writeln!(
            out,
            "initialised the HA pair; the secondary says:\n{answer}"
        )?;
    }
    Ok(())
}

/// `meshward init`: the cluster, then its first admin user with `root` and that user's client
/// certificate for the HTTPS admin API (written as `user cert` writes it), so the admin API
/// works right after `init`.
pub fn init(g: &Global, args: &crate::args::InitArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use meshward_api::Request;
    use meshward_api::cluster::IssueCertificate;
    // Checked first: a bad name refuses the init, not just the admin.
    let name: meshward_node::grants::UserName = args
        .admin
        .parse()
        .map_err(|e: meshward_node::grants::ParseError| anyhow::anyhow!("--admin: {e}"))?;
    let dir = args
        .admin_certs
        .clone()
        .unwrap_or_else(|| g.data.join("admin-certs"));
    // An initialised directory is refused as such before anything else.
    meshward_node::lifecycle::refuse_initialised(&g.data)?;
    for file in [format!("{name}.key"), format!("{name}.crt")] {
        if std::fs::symlink_metadata(dir.join(&file)).is_ok() {
            bail!(
                "{} exists; give another --admin-certs directory (nothing was changed)",
                dir.join(file).display()
            );
        }
    }
    meshward_node::lifecycle::init(&g.data, &args.options(), out)?;
    let mut backend = meshward_node::ops::LocalBackend::new(g.data.clone());
    let name = name.as_str().to_string();
    let mut run = |request| {
        meshward_node::ops::execute(&mut backend, request)
            .map_err(|p| anyhow::anyhow!("creating the first admin {name}: {}", p.detail))
    };
    run(Request::CreateUser { name: name.clone() })?;
    run(Request::Grant {
        name: name.clone(),
        grant: "root".into(),
    })?;
    let reply = run(Request::IssueCertificate {
        name: name.clone(),
        body: IssueCertificate { valid_days: None },
    })?;
    writeln!(
        out,
        "\nFirst admin user {name} (root) for the HTTPS admin API:"
    )?;
    write_certificate(g, &dir, reply, out)
}
