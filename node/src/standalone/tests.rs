use super::*;
use crate::lifecycle::{InitOptions, init};

/// A licence issuer's public key.
fn issuer(seed: u8) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
        .verifying_key()
        .to_bytes()
}

fn init_at(data: &Path) -> Store {
    let options = InitOptions {
        address: "127.0.0.1:7400".into(),
        listen: None,
        licence_issuer: Some(issuer(7)),
    };
    init(data, &options, &mut Vec::new()).unwrap();
    Store::open(data).unwrap()
}

#[test]
fn a_member_becomes_its_own_cluster_keeping_mek_settings_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = init_at(data);
    let before = store.identity().unwrap();
    store.set_setting("site", "north").unwrap();
    let mek_before = std::fs::read(data.join(MEK_FILE)).unwrap();
    let left = become_standalone(data, &store, "127.0.0.1:7400").unwrap();
    assert_eq!(left.old, before.cluster);
    assert_ne!(left.new, before.cluster);
    let after = store.identity().unwrap();
    assert_eq!(after.cluster, left.new);
    assert_ne!(
        after.key.verifying_key(),
        before.key.verifying_key(),
        "a fresh key: the old one's positions stay the old cluster's"
    );
    assert_eq!(membership(&store).unwrap(), Membership::Alone(left.new));
    let chain = crate::roster::chain(&store).unwrap().unwrap();
    assert_eq!(
        chain.licence_issuer(),
        Some(issuer(7)),
        "the issuer is kept"
    );
    assert_eq!(store.setting("site").unwrap().as_deref(), Some("north"));
    assert_eq!(std::fs::read(data.join(MEK_FILE)).unwrap(), mek_before);
    assert!(crate::lifecycle::tls_blobs(&store).unwrap().is_some());
    assert_eq!(store.founding().unwrap(), None);
    // The backup holds the old cluster and opens with the MEK.
    let bytes = std::fs::read(&left.backup).unwrap();
    let header =
        crate::backup::Header::decode(bytes[..crate::backup::HEADER_LEN].try_into().unwrap())
            .unwrap();
    assert_eq!(header.cluster, before.cluster.0);
    let mek = Mek::load(&data.join(MEK_FILE)).unwrap();
    let mut reader = crate::backup::ArchiveReader::new(bytes.as_slice(), &mek).unwrap();
    std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
}

#[test]
fn a_crash_between_forgetting_and_founding_is_finished_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = init_at(data);
    assert_eq!(finish_founding(data, &store).unwrap(), None);
    store
        .forget_cluster(Next::Found {
            address: "127.0.0.1:7400",
            licence_issuer: Some(issuer(9)),
        })
        .unwrap();
    // As found after a crash: no cluster, the founding mark kept.
    assert_eq!(membership(&store).unwrap(), Membership::Fresh);
    assert!(crate::lifecycle::tls_blobs(&store).unwrap().is_none());
    drop(store);
    let store = Store::open(data).unwrap();
    let new = finish_founding(data, &store).unwrap().expect("finished");
    assert_eq!(membership(&store).unwrap(), Membership::Alone(new));
    let chain = crate::roster::chain(&store).unwrap().unwrap();
    assert_eq!(chain.licence_issuer(), Some(issuer(9)));
    assert_eq!(chain.roster().members[0].address, "127.0.0.1:7400");
    assert_eq!(finish_founding(data, &store).unwrap(), None);
}

#[test]
fn a_garbled_founding_mark_is_an_error_not_a_panic() {
    let store = Store::in_memory().unwrap();
    store.identity().unwrap();
    let key = store.identity().unwrap().key.verifying_key();
    store.forget_cluster(Next::Join).unwrap();
    assert_eq!(
        store.identity().unwrap().key.verifying_key(),
        key,
        "a joiner keeps its key"
    );
    assert_eq!(store.founding().unwrap(), None);
    store
        .forget_cluster(Next::Found {
            address: "a",
            licence_issuer: None,
        })
        .unwrap();
    assert_eq!(store.founding().unwrap(), Some(("a".into(), None)));
    for bad in [&[][..], &[1, 2, 3], &[2, b'a'], &[0, 0xff]] {
        store.set_founding_raw(bad);
        assert!(store.founding().is_err(), "{bad:?}");
    }
}
