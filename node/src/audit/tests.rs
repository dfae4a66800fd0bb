#![allow(clippy::unwrap_used)]

use std::{io, thread};

use super::*;
use redb::backends::InMemoryBackend;

fn mem_db() -> Database {
    Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .unwrap()
}

fn rec(n: u32) -> NewAuditRecord {
    NewAuditRecord {
        at_ms: 1_700_000_000_000 + i64::from(n),
        actor: format!("user{n}"),
        action: "session.open".into(),
        target: "srv-db-01".into(),
        detail: format!("session {n}\nprotocol\tssh"),
    }
}

fn db_with(n: u32) -> Database {
    let db = mem_db();
    let batch: Vec<_> = (1..=n).map(rec).collect();
    AuditLog::append_batch(&db, &batch).unwrap();
    db
}

fn raw_get(db: &Database, seq: u64) -> Vec<u8> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(RECORDS).unwrap();
    table.get(seq).unwrap().unwrap().value().to_vec()
}

fn raw_put(db: &Database, seq: u64, bytes: &[u8]) {
    let txn = db.begin_write().unwrap();
    txn.open_table(RECORDS).unwrap().insert(seq, bytes).unwrap();
    txn.commit().unwrap();
}

fn raw_remove(db: &Database, seq: u64) {
    let txn = db.begin_write().unwrap();
    txn.open_table(RECORDS).unwrap().remove(seq).unwrap();
    txn.commit().unwrap();
}

fn first_break(db: &Database) -> Option<ChainBreak> {
    AuditLog::verify(db).unwrap().first_break
}

#[test]
fn appends_dense_chained_records_across_batches() {
    let db = mem_db();
    let a = AuditLog::append_batch(&db, &[rec(1), rec(2)]).unwrap();
    let b = AuditLog::append_batch(&db, &[rec(3)]).unwrap();
    assert_eq!(a[0].seq, 1);
    assert_eq!(a[0].prev, [0; 32]);
    assert_eq!(a[1].prev, a[0].hash);
    assert_eq!(b[0].seq, 3);
    assert_eq!(b[0].prev, a[1].hash);
    assert_eq!(
        AuditLog::head(&db).unwrap(),
        Some(Head {
            seq: 3,
            hash: b[0].hash
        })
    );
    let all = AuditLog::list(&db, 0, 100).unwrap();
    assert_eq!(all, [a, b].concat());
    let report = AuditLog::verify(&db).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.verified, 3);
}

#[test]
fn hash_encoding_is_pinned() {
    let record = seal(1, rec(1), [0; 32]);
    assert_eq!(
        hex::encode(record.hash),
        "85250671e0f6ec92ea8fcbc04787d1695c0f7fb61e45b13ffa99793bb64f69eb"
    );
}

#[test]
fn lists_from_a_seq_with_a_limit() {
    let db = db_with(10);
    let page = AuditLog::list(&db, 4, 3).unwrap();
    let seqs: Vec<_> = page.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert!(AuditLog::list(&db, 11, 3).unwrap().is_empty());
    assert!(AuditLog::list(&mem_db(), 1, 3).unwrap().is_empty());
}

#[test]
fn empty_store_verifies_and_empty_batch_writes_nothing() {
    let db = mem_db();
    assert!(AuditLog::append_batch(&db, &[]).unwrap().is_empty());
    let report = AuditLog::verify(&db).unwrap();
    assert_eq!(report.verified, 0);
    assert!(report.is_intact());
    assert_eq!(AuditLog::head(&db).unwrap(), None);
}

#[test]
fn detects_and_names_an_altered_record() {
    let db = db_with(5);
    let mut r: AuditRecord = postcard::from_bytes(&raw_get(&db, 3)).unwrap();
    r.detail = "nothing happened".into();
    raw_put(&db, 3, &postcard::to_stdvec(&r).unwrap());
    let report = AuditLog::verify(&db).unwrap();
    assert_eq!(report.first_break, Some(ChainBreak::Altered { seq: 3 }));
    assert_eq!(report.verified, 2);
}

#[test]
fn detects_and_names_a_removed_record() {
    let db = db_with(5);
    raw_remove(&db, 3);
    assert_eq!(first_break(&db), Some(ChainBreak::Removed { seq: 3 }));
}

#[test]
fn detects_removal_of_the_last_records_against_the_head() {
    let db = db_with(5);
    raw_remove(&db, 5);
    raw_remove(&db, 4);
    assert_eq!(first_break(&db), Some(ChainBreak::Removed { seq: 4 }));
}

#[test]
fn detects_and_names_swapped_records() {
    let db = db_with(5);
    let (two, three) = (raw_get(&db, 2), raw_get(&db, 3));
    raw_put(&db, 2, &three);
    raw_put(&db, 3, &two);
    assert_eq!(first_break(&db), Some(ChainBreak::Reordered { seq: 2 }));
}

#[test]
fn detects_a_rehashed_record_whose_prev_does_not_link() {
    let db = db_with(5);
    let mut r: AuditRecord = postcard::from_bytes(&raw_get(&db, 4)).unwrap();
    r.prev = [7; 32];
    r.hash = r.compute_hash();
    raw_put(&db, 4, &postcard::to_stdvec(&r).unwrap());
    assert_eq!(first_break(&db), Some(ChainBreak::Reordered { seq: 4 }));
}

#[test]
fn detects_records_past_the_head() {
    let db = db_with(3);
    let extra = seal(4, rec(4), AuditLog::head(&db).unwrap().unwrap().hash);
    raw_put(&db, 4, &postcard::to_stdvec(&extra).unwrap());
    assert_eq!(first_break(&db), Some(ChainBreak::HeadMismatch { seq: 4 }));
    // And appends refuse to build on it.
    let err = AuditLog::append_batch(&db, &[rec(5)]).unwrap_err();
    assert!(matches!(err, AuditError::CorruptHead { .. }), "{err}");
}

#[test]
fn garbage_record_bytes_are_an_error_not_a_panic() {
    let db = db_with(3);
    raw_put(
        &db,
        2,
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    );
    assert_eq!(first_break(&db), Some(ChainBreak::Unreadable { seq: 2 }));
    let err = AuditLog::list(&db, 1, 10).unwrap_err();
    assert!(
        matches!(err, AuditError::CorruptRecord { seq: 2, .. }),
        "{err}"
    );
    raw_put(&db, 2, &[]);
    assert_eq!(first_break(&db), Some(ChainBreak::Unreadable { seq: 2 }));
}

#[test]
fn garbage_head_bytes_are_an_error_not_a_panic() {
    let db = db_with(2);
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert(HEAD_KEY, [1u8, 2, 3].as_slice())
        .unwrap();
    txn.commit().unwrap();
    assert_eq!(first_break(&db), Some(ChainBreak::HeadMismatch { seq: 2 }));
    assert!(matches!(
        AuditLog::append_batch(&db, &[rec(3)]),
        Err(AuditError::CorruptHead { .. })
    ));
    assert!(matches!(
        AuditLog::head(&db),
        Err(AuditError::CorruptHead { .. })
    ));
}

#[test]
fn refuses_bad_input_naming_field_and_limit_and_leaves_store_unchanged() {
    let db = db_with(2);
    let before = (
        AuditLog::head(&db).unwrap(),
        AuditLog::list(&db, 0, 10).unwrap(),
    );
    let long_name = "x".repeat(MAX_NAME_BYTES + 1);
    type Mutate = fn(&mut NewAuditRecord, &str);
    let cases: Vec<(Mutate, InputError)> = vec![
        (
            |r, _| r.actor.clear(),
            InputError::Empty {
                field: Field::Actor,
            },
        ),
        (
            |r, _| r.action.clear(),
            InputError::Empty {
                field: Field::Action,
            },
        ),
        (
            |r, s| r.target = s.into(),
            InputError::TooLong {
                field: Field::Target,
                len: MAX_NAME_BYTES + 1,
                max: MAX_NAME_BYTES,
            },
        ),
        (
            |r, _| r.detail = "d".repeat(MAX_DETAIL_BYTES + 1),
            InputError::TooLong {
                field: Field::Detail,
                len: MAX_DETAIL_BYTES + 1,
                max: MAX_DETAIL_BYTES,
            },
        ),
        (
            |r, _| r.actor = "al\nice".into(),
            InputError::ControlChar {
                field: Field::Actor,
                code: 0x0a,
                at: 2,
            },
        ),
        (
            |r, _| r.detail = "ok\tok\nbad\u{1b}[31m".into(),
            InputError::ControlChar {
                field: Field::Detail,
                code: 0x1b,
                at: 9,
            },
        ),
        (
            |r, _| r.action = "x\u{85}".into(),
            InputError::ControlChar {
                field: Field::Action,
                code: 0x85,
                at: 1,
            },
        ),
    ];
    for (mutate, expected) in cases {
        let mut bad = rec(9);
        mutate(&mut bad, &long_name);
        // The bad record second in its batch: the good first one must not be written.
        let err = AuditLog::append_batch(&db, &[rec(3), bad]).unwrap_err();
        match &err {
            AuditError::Invalid { index: 1, source } => assert_eq!(source, &expected),
            other => panic!("unexpected error {other}"),
        }
        let message = err.to_string();
        let field = expected_field(&expected).to_string();
        assert!(message.contains(&field), "{message}");
        let after = (
            AuditLog::head(&db).unwrap(),
            AuditLog::list(&db, 0, 10).unwrap(),
        );
        assert_eq!(before, after);
    }
    // Exactly at the limits is fine.
    let mut edge = rec(3);
    edge.actor = "a".repeat(MAX_NAME_BYTES);
    edge.detail = "d".repeat(MAX_DETAIL_BYTES);
    AuditLog::append_batch(&db, &[edge]).unwrap();
}

fn expected_field(e: &InputError) -> Field {
    match *e {
        InputError::Empty { field }
        | InputError::TooLong { field, .. }
        | InputError::ControlChar { field, .. } => field,
    }
}

#[test]
fn group_committer_serves_concurrent_writers_with_dense_seqs() {
    let db = Arc::new(mem_db());
    let committer = GroupCommitter::spawn(Arc::clone(&db), GroupCommitConfig::default()).unwrap();
    let mut seqs: Vec<u64> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let committer = &committer;
                s.spawn(move || {
                    let pending: Vec<_> = (0..250)
                        .map(|i| committer.submit(rec(t * 1000 + i)).unwrap())
                        .collect();
                    pending
                        .into_iter()
                        .map(|p| p.wait().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    committer.shutdown();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    let report = AuditLog::verify(&*db).unwrap();
    assert!(report.is_intact());
    assert_eq!(report.verified, 1000);
}

#[test]
fn group_committer_refuses_bad_input_alone() {
    let db = Arc::new(mem_db());
    let committer = GroupCommitter::spawn(Arc::clone(&db), GroupCommitConfig::default()).unwrap();
    let good = committer.submit(rec(1)).unwrap();
    let mut bad = rec(2);
    bad.target.clear();
    assert!(matches!(
        committer.submit(bad),
        Err(AuditError::Invalid { .. })
    ));
    assert_eq!(good.wait().unwrap(), 1);
    // Dropped without waiting: still committed, by shutdown at the latest.
    drop(committer.submit(rec(3)).unwrap());
    committer.shutdown();
    assert_eq!(AuditLog::head(&*db).unwrap().map(|h| h.seq), Some(2));
}

#[test]
fn stdin_writer_answers_every_line_in_order() {
    let db = mem_db();
    let input = "alice\tlogin\tsrv1\tfrom 10.0.0.1\n\
                 bad line\n\
                 bob\tlogout\tsrv1\tdetail\twith\ttabs\r\n\
                 carol\t\tsrv2\tx\n\
                 dave\texec\tsrv3\t\n";
    let mut input = input.as_bytes().to_vec();
    input.extend_from_slice(b"eve\tlogin\tsrv\t\xff\xfe\nfrank\tlogin\tsrv\tlast, no newline");
    let mut out = Vec::new();
    run_stdin_writer(&db, io::Cursor::new(input), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert_eq!(lines[0], "ack 1");
    assert!(lines[1].starts_with("err 2 expected 4"), "{out}");
    assert_eq!(lines[2], "ack 2");
    assert!(lines[3].starts_with("err 4 action is empty"), "{out}");
    assert_eq!(lines[4], "ack 3");
    assert_eq!(lines[5], "err 6 line is not UTF-8");
    assert_eq!(lines[6], "ack 4");
    let records = AuditLog::list(&db, 1, 10).unwrap();
    assert_eq!(records[1].actor, "bob");
    assert_eq!(records[1].detail, "detail\twith\ttabs");
    assert_eq!(records[2].detail, "");
    assert_eq!(records[3].detail, "last, no newline");
    assert!(AuditLog::verify(&db).unwrap().is_intact());
}
