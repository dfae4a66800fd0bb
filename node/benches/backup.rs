//! Backup and restore throughput on a store of 100 k events (`MESHWARD_BENCH_EVENTS` overrides):
//! a sealed archive written from one read transaction to a file and fsynced, and that archive
//! restored into a new redb file and fsynced, as `meshward backup` and `meshward restore` do.
//! Throughput is the snapshot's plaintext bytes per second.
//!
//! `cargo bench -p meshward-node --bench backup`

#![allow(missing_docs)]

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meshward_node::backup::{ArchiveReader, ArchiveWriter, read_snapshot, write_snapshot};
use meshward_node::mek::Mek;
use meshward_node::store::{STORE_FILE, Store};
use rand::SeedableRng;

mod common;

fn backup(store: &Store, mek: &Mek, out: &std::path::Path) -> u64 {
    let file = File::create(out).expect("archive file");
    let mut archive = ArchiveWriter::new(BufWriter::new(file), mek, [7; 16]).expect("header");
    let stats = write_snapshot(store.reader(), &mut archive, &mut |_| {}).expect("snapshot");
    let file = archive
        .finish()
        .expect("finish")
        .into_inner()
        .expect("flush");
    file.sync_all().expect("fsync");
    stats.bytes
}

fn restore(archive: &std::path::Path, mek: &Mek, into: &std::path::Path) {
    let db = meshward_node::disk::open_database(into).expect("new store");
    let file = File::open(archive).expect("archive");
    let mut reader = ArchiveReader::new(BufReader::new(file), mek).expect("header");
    read_snapshot(&db, &mut reader).expect("restore");
    drop(db);
    File::open(into).and_then(|f| f.sync_all()).expect("fsync");
}

fn backup_and_restore(c: &mut Criterion) {
    let events = common::events_from_env(100_000);
    // In $TMPDIR (or /tmp): on a real disk, so that the fsyncs are real.
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    drop(common::write_events(&store, events));
    let mek = Mek::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let archive = dir.path().join("store.mwb");
    let bytes = backup(&store, &mek, &archive);
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1e6;
    println!(
        "{events} events: store file {:.1} MB, snapshot {:.1} MB, archive {:.1} MB",
        size(&dir.path().join(STORE_FILE)),
        bytes as f64 / 1e6,
        size(&archive)
    );

    let mut group = c.benchmark_group("backup");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Bytes(bytes));
    let out = dir.path().join("again.mwb");
    group.bench_function("backup", |b| b.iter(|| backup(&store, &mek, &out)));
    let target = dir.path().join("restored.redb");
    group.bench_function("restore", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(&target);
            },
            |()| restore(&archive, &mek, &target),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, backup_and_restore);
criterion_main!(benches);
