use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::store::Store;

fn mek(seed: u64) -> Mek {
    Mek::generate(&mut ChaCha8Rng::seed_from_u64(seed))
}

fn seal(mek: &Mek, plain: &[u8]) -> Vec<u8> {
    let mut w = ArchiveWriter::new(Vec::new(), mek, [9; 16]).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap()
}

fn open(mek: &Mek, archive: &[u8]) -> Result<Vec<u8>, BackupError> {
    let mut r = ArchiveReader::new(archive, mek)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(archive_error)?;
    Ok(out)
}

/// Splits an archive into its header and chunk frames.
fn frames(archive: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut rest = &archive[HEADER_LEN..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        out.push(rest[..5 + len].to_vec());
        rest = &rest[5 + len..];
    }
    (archive[..HEADER_LEN].to_vec(), out)
}

#[test]
fn archives_round_trip_at_every_chunk_boundary() {
    let key = mek(1);
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 17] {
        let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let archive = seal(&key, &plain);
        assert_eq!(
            frames(&archive).1.len(),
            len.div_ceil(CHUNK).max(1),
            "{len}"
        );
        assert_eq!(open(&key, &archive).unwrap(), plain, "{len}");
    }
}

#[test]
fn wrong_key_tampering_truncation_reordering_and_splicing_are_refused() {
    let key = mek(1);
    let plain = vec![7u8; 2 * CHUNK + 5];
    let archive = seal(&key, &plain);
    let (header, chunks) = frames(&archive);
    assert_eq!(chunks.len(), 3);
    assert!(matches!(
        open(&mek(2), &archive),
        Err(BackupError::Sealed { index: 0 })
    ));
    for at in [
        9,
        30,
        44,
        HEADER_LEN,
        HEADER_LEN + 3,
        HEADER_LEN + 60,
        archive.len() - 1,
    ] {
        let mut bad = archive.clone();
        bad[at] ^= 1;
        assert!(open(&key, &bad).is_err(), "byte {at} flipped");
    }
    // Dropping the last chunk, or cutting anywhere, is truncation.
    let without_last = [header.clone(), chunks[0].clone(), chunks[1].clone()].concat();
    assert!(matches!(
        open(&key, &without_last),
        Err(BackupError::Truncated { chunks: 2 })
    ));
    for cut in [
        HEADER_LEN,
        HEADER_LEN + 2,
        archive.len() / 2,
        archive.len() - 1,
    ] {
        assert!(
            matches!(
                open(&key, &archive[..cut]),
                Err(BackupError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    // Claiming the second chunk is the last one.
    let mut early = chunks[1].clone();
    early[0] = 1;
    let early = [header.clone(), chunks[0].clone(), early].concat();
    assert!(matches!(
        open(&key, &early),
        Err(BackupError::Sealed { index: 1 })
    ));
    let swapped = [
        header.clone(),
        chunks[1].clone(),
        chunks[0].clone(),
        chunks[2].clone(),
    ]
    .concat();
    assert!(matches!(
        open(&key, &swapped),
        Err(BackupError::Sealed { index: 0 })
    ));
    // A chunk of another archive sealed with the same key.
    let (_, other) = frames(&seal(&key, &plain));
    let spliced = [
        header.clone(),
        chunks[0].clone(),
        other[1].clone(),
        chunks[2].clone(),
    ]
    .concat();
    assert!(matches!(
        open(&key, &spliced),
        Err(BackupError::Sealed { index: 1 })
    ));
    let trailing = [archive.clone(), vec![0]].concat();
    assert!(matches!(open(&key, &trailing), Err(BackupError::Trailing)));
    assert!(matches!(
        open(&key, b"MWBACKUP"),
        Err(BackupError::NotAnArchive(_))
    ));
}

fn dump(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    write_snapshot(store.reader(), &mut out, &mut |_| {}).unwrap();
    out
}

#[test]
fn a_snapshot_copies_every_table_and_a_bad_one_writes_nothing() {
    let store = Store::in_memory().unwrap();
    store
        .set_setting("fingerprint-enforcement", "warn")
        .unwrap();
    crate::audit::AuditLog::append_batch(
        store.db().unwrap(),
        &[crate::audit::NewAuditRecord {
            at_ms: 1,
            actor: "a".into(),
            action: "b".into(),
            target: "c".into(),
            detail: String::new(),
        }],
    )
    .unwrap();
    let snapshot = dump(&store);
    let copy = Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .unwrap();
    let stats = read_snapshot(&copy, &mut &snapshot[..]).unwrap();
    assert!(stats.tables >= 4 && stats.rows >= 4, "{stats:?}");
    let mut again = Vec::new();
    write_snapshot(&copy, &mut again, &mut |_| {}).unwrap();
    assert_eq!(again, snapshot, "a restored copy snapshots identically");

    for bad in [
        snapshot[..snapshot.len() - 1].to_vec(),
        [&snapshot[..], &[0]].concat(),
        [&snapshot[..8], &[TAG_ROW]].concat(),
        [&snapshot[..8], &[TAG_TABLE, 0, 1, b'x', 3, 1]].concat(), // u64 -> str
        [
            &snapshot[..8],
            &[TAG_TABLE, 0, 1, b'x', 3, 2, TAG_ROW, 0, 0, 0, 1, 5],
        ]
        .concat(),
        b"MWSTORE2".to_vec(),
    ] {
        let empty = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        assert!(read_snapshot(&empty, &mut &bad[..]).is_err());
        let tables = empty.begin_read().unwrap().list_tables().unwrap().count();
        assert_eq!(tables, 0, "nothing committed");
    }
}
