use meshward_crdt::mastered::Chain;

use super::*;
use crate::grants::UserChange;

/// A chain of `changes` over a genesis led by key 1, and the records.
fn chain(changes: &[(RecordKind, Vec<u8>)]) -> Vec<SignedRecord> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let bundle = crate::roster::MasteredBundle::genesis(
        &key,
        meshward_crdt::ClusterId([1; 16]),
        vec![meshward_crdt::mastered::Member {
            key: key.verifying_key().to_bytes(),
            address: "a".into(),
        }],
        None,
    );
    let mut records: Vec<SignedRecord> = bundle
        .records
        .iter()
        .map(|r| SignedRecord::decode(r).unwrap())
        .collect();
    let mut chain = Chain::rebuild(bundle.anchor(), &records).unwrap();
    for (kind, payload) in changes {
        let r = chain.sign_next(&key, *kind, payload.clone());
        chain.apply(chain.verify(&r).unwrap()).unwrap();
        records.push(r);
    }
    records
}

fn user(change: UserChange) -> (RecordKind, Vec<u8>) {
    change.encode()
}

#[test]
fn records_are_shown_decoded_against_the_current_chain() {
    let alice = || "alice".parse().unwrap();
    let current = chain(&[
        user(UserChange::Create(alice())),
        (
            RecordKind::Config,
            ConfigChange::Set {
                key: "managed.site".into(),
                value: "new".into(),
            }
            .encode(),
        ),
    ]);
    let losing = chain(&[
        user(UserChange::Delete(alice())),
        (
            RecordKind::Config,
            ConfigChange::Set {
                key: "managed.site".into(),
                value: "old".into(),
            }
            .encode(),
        ),
        Serial::from_der_integer(&[0x0a, 0x0b]).revocation(),
    ]);
    let shown: Vec<SupersededRecord> = losing[1..].iter().map(|r| describe(r, &current)).collect();
    assert_eq!(shown[0].subject, "user alice");
    assert_eq!(shown[0].change, "exists → deleted");
    assert!(shown[0].restrictive && !shown[0].in_force);
    assert_eq!(shown[1].subject, "config managed.site");
    assert_eq!(shown[1].change, "\"new\" → \"old\"");
    assert!(!shown[1].restrictive && !shown[1].in_force);
    assert_eq!(shown[2].subject, "certificate 0a0b");
    assert_eq!(shown[2].change, "valid → revoked");
    // Against a chain that already holds them: in force.
    assert!(describe(&losing[1], &losing).in_force);
    assert!(describe(&losing[3], &losing).in_force);
}

#[test]
fn a_payload_this_version_does_not_know_is_shown_as_such() {
    let records = chain(&[(RecordKind::Config, b"\xff garbage".to_vec())]);
    let shown = describe(&records[1], &records);
    assert_eq!(shown.change, "not understood by this version");
    assert!(!shown.in_force);
}

#[test]
fn a_managed_row_is_shown_against_the_current_document() {
    let change = |doc: Option<&str>| {
        (
            RecordKind::Managed,
            ManagedChange {
                namespace: "pam".into(),
                table: "devices".into(),
                key: "db-01".into(),
                document: doc.map(str::to_string),
            }
            .encode(),
        )
    };
    let current = chain(&[change(Some("{\"port\":22}"))]);
    let losing = chain(&[change(None)]);
    let shown = describe(&losing[1], &current);
    assert_eq!(shown.subject, "managed pam/devices/db-01");
    assert_eq!(shown.change, "{\"port\":22} → absent");
    assert!(!shown.in_force && !shown.restrictive);
    assert!(describe(&current[1], &current).in_force);
}
