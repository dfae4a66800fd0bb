//! Durable audit appends per second with group commit: one durable redb commit per batch of
//! 1, 64 or 1024 records, on a temporary file.
//!
//! `cargo bench -p meshward-node --bench audit`

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meshward_node::audit::{AuditLog, NewAuditRecord};

const BATCH_SIZES: [usize; 3] = [1, 64, 1024];

fn record(i: usize) -> NewAuditRecord {
    NewAuditRecord {
        at_ms: 1_700_000_000_000 + i as i64,
        actor: format!("user{}", i % 50),
        action: "session.command".into(),
        target: format!("srv-db-{:02}", i % 20),
        detail: format!("session {i}: ls -la /var/log\texit 0"),
    }
}

fn durable_appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_durable_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for batch in BATCH_SIZES {
        // In $TMPDIR (or /tmp): it must be on a real disk, not a tmpfs, for commits to fsync.
        let dir = tempfile::tempdir().expect("temp dir");
        let db = redb::Database::create(dir.path().join("audit-bench.redb")).expect("create db");
        let records: Vec<_> = (0..batch).map(record).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(batch),
            &records,
            |b, records| {
                b.iter(|| black_box(AuditLog::append_batch(&db, records).expect("append")));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, durable_appends);
criterion_main!(benches);
