use std::collections::BTreeMap;

use meshward_crdt::{Row, TableId};
use proptest::prelude::*;

use super::*;
use crate::audit::ChainBreak;

fn target(name: &str) -> fn(&[u8]) {
    match name {
        "sync_message" => sync_message,
        "mastered_record" => mastered_record,
        "mastered_bundle" => mastered_bundle,
        "fork_choice" => fork_choice,
        "core_inputs" => core_inputs,
        "audit_record" => audit_records,
        "backup_archive" => backup_archive,
        "grants_payload" => grants_payload,
        "credential_row" => credential_row,
        "joining_bundle" => joining_bundle,
        "join_setup" => join_setup,
        "setup_message" => setup_message,
        other => panic!("no fuzzing function for target {other}"),
    }
}

/// Whether `seed` passes the first decode, verify or open `target` does, and what the
/// target does with it next.
fn reaches_deep(target: &str, seed: &[u8]) -> Result<(), String> {
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    match target {
        "sync_message" => match SyncMessage::decode(seed) {
            Ok(message) => {
                check(!message.items.is_empty(), "no items")?;
                let mut replica = replica();
                for item in message.items {
                    replica.apply(item).map_err(|e| format!("apply: {e}"))?;
                }
                Ok(())
            }
            Err(_) => {
                let digest = Digest::decode(seed).map_err(|e| format!("digest: {e}"))?;
                check(!digest.segments.is_empty(), "an empty digest")
            }
        },
        "mastered_record" => {
            let record = SignedRecord::decode(seed).map_err(|e| e.to_string())?;
            let (chain, _) = genesis();
            let on_empty = Chain::new(anchor()).verify(&record);
            let on_genesis = chain.verify(&record);
            check(
                on_empty.is_ok() || on_genesis.is_ok(),
                &format!("verifies on no chain: {on_empty:?}, {on_genesis:?}"),
            )
        }
        "fork_choice" => {
            let (ours, theirs) = fork_chains(seed).ok_or("records do not decode")?;
            let choice = fork::choose(anchor(), &ours, &theirs).map_err(|e| e.to_string())?;
            check(choice.common > 0, "no common genesis")
        }
        "mastered_bundle" => {
            let records = MasteredBundle::decode(seed)
                .map_err(|e| e.to_string())?
                .records
                .len();
            let store = Store::in_memory().map_err(|e| e.to_string())?;
            let imported = crate::roster::import(&store, seed).map_err(|e| e.to_string())?;
            check(imported == records, "not every record imported")
        }
        "core_inputs" => {
            let (core, outputs) = fed_core(seed);
            let counters = core.counters();
            let accepted = outputs.iter().any(|o| {
                matches!(
                    o,
                    Output::Validate {
                        id: 1,
                        verdict: crate::core::Verdict::Accept
                    }
                )
            });
            check(
                match Gossip::decode(seed) {
                    Some(Gossip::Push { .. }) => accepted && counters.pushes_applied == 1,
                    // A follower's advert is taken (its figures noted) but not relayed.
                    Some(Gossip::Advert(advert)) => core
                        .peers()
                        .any(|(k, p)| *k == advert.origin && p.changes == Some(advert.changes)),
                    Some(_) => accepted,
                    None => counters.sync_served == 1 || counters.sync_rounds == 1,
                },
                &format!("not taken: {counters:?}"),
            )
        }
        "audit_record" => {
            let records = seed.split(|&b| b == 0xff).count() as u64;
            let store = audit_store(seed).ok_or("no store")?;
            let report = AuditLog::verify(store.reader()).map_err(|e| e.to_string())?;
            // Every record verifies; the target writes no head, so the chain ends there.
            check(
                report.verified == records
                    && report.first_break == Some(ChainBreak::HeadMismatch { seq: records }),
                &format!("{report:?}"),
            )?;
            let listed = AuditLog::list(store.reader(), 1, 32).map_err(|e| e.to_string())?;
            check(listed.len() as u64 == records, "not every record listed")
        }
        "backup_archive" => {
            let db = redb::Database::builder()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| e.to_string())?;
            let stats = if seed.starts_with(crate::backup::MAGIC) {
                let mek = mek();
                let mut reader = ArchiveReader::new(seed, &mek).map_err(|e| e.to_string())?;
                read_snapshot(&db, &mut reader)
            } else {
                read_snapshot(&db, &mut &seed[..])
            }
            .map_err(|e| e.to_string())?;
            check(stats.rows > 0, "an empty snapshot")
        }
        "grants_payload" => {
            let payload = RecordKind::ALL.iter().any(|&kind| {
                matches!(UserChange::decode(kind, seed), Ok(Some(_)))
                    || matches!(Serial::decode_revocation(kind, seed), Ok(Some(_)))
            });
            let text = std::str::from_utf8(seed).is_ok_and(|t| {
                t.parse::<Grant>().is_ok()
                    || t.parse::<UserName>().is_ok()
                    || t.parse::<Serial>().is_ok()
            });
            let ca = crate::certs::parse_ca_pem(seed).is_ok();
            check(payload || text || ca, "neither a payload, a text nor a CA")
        }
        "credential_row" => match Row::decode(TableId::Rotations, seed) {
            Ok(Row::Rotation(r)) => {
                let writer = WriterId::from_key(&key(3).verifying_key());
                let opened = crate::credentials::open(
                    &mek(),
                    CLUSTER,
                    &r.address,
                    &writer,
                    r.hlc,
                    &r.sealed,
                );
                check(
                    opened.is_ok() || r.seen.len() == 1,
                    "neither opens nor carries what it saw",
                )
            }
            other => Err(format!("not a rotation row: {other:?}")),
        },
        "joining_bundle" => {
            let bundle = JoiningBundle::decode(seed).map_err(|e| e.to_string())?;
            check(bundle.cluster == CLUSTER.0, "another cluster's bundle")
        }
        "setup_message" => {
            use crate::join::wire::{SetupRequest, SetupResponse};
            check(
                SetupRequest::decode(seed).is_some() || SetupResponse::decode(seed).is_some(),
                "neither a request nor an answer",
            )
        }
        "join_setup" => {
            let outcomes = run_join_setup(seed);
            check(
                matches!(outcomes.first(), Some(JoinOutcome::Challenge(Ok(_)))),
                &format!("the first hello gets no challenge: {outcomes:?}"),
            )?;
            check(
                outcomes.iter().any(|o| matches!(o, JoinOutcome::Answer(_))),
                "no answer",
            )
        }
        other => Err(format!("no check for target {other}")),
    }
}

#[test]
fn every_fuzz_target_has_seeds_that_reach_deep() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(manifest).unwrap().parse().unwrap();
    let bins: BTreeSet<&str> = manifest["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bin| bin["name"].as_str().unwrap())
        .collect();
    let seeds: BTreeMap<&str, Vec<Vec<u8>>> = seeds().into_iter().collect();
    assert_eq!(seeds.keys().copied().collect::<BTreeSet<_>>(), bins);
    for (name, seeds) in &seeds {
        assert!(seeds.len() >= 2, "{name}: {} seeds", seeds.len());
        for (n, seed) in seeds.iter().enumerate() {
            assert!(
                seed.len() <= MAX_SEED,
                "{name} seed {n}: {} bytes",
                seed.len()
            );
            if let Err(e) = reaches_deep(name, seed) {
                panic!("{name} seed {n} stops early: {e}");
            }
            target(name)(seed);
        }
    }
    assert!(
        seeds["join_setup"].iter().any(|seed| matches!(
            run_join_setup(seed).last(),
            Some(JoinOutcome::Answer(Ok(_)))
        )),
        "no join_setup seed is admitted"
    );
}

#[test]
fn the_join_setup_seeds_admit_the_joiner_or_refuse_its_mek() {
    let seeds = join_seeds();
    let admitted = run_join_setup(&seeds[0]);
    let Some(JoinOutcome::Answer(Ok(admit))) = admitted.last() else {
        panic!("the valid seed is not admitted: {admitted:?}");
    };
    assert_eq!(admit.member.key, key(5).verifying_key().to_bytes());
    assert_eq!(admit.member.address, "node2.example");
    assert_eq!(admit.roster.members.len(), 2);
    let refused = run_join_setup(&seeds[1]);
    assert!(
        matches!(
            refused.last(),
            Some(JoinOutcome::Answer(Err(JoinRefusal::WrongMek)))
        ),
        "{refused:?}"
    );
    // A bundle of another cluster is refused at hello, and the bundle stays usable.
    let foreign = run_join_setup(&seeds[2]);
    assert!(
        matches!(
            foreign.as_slice(),
            [
                JoinOutcome::Challenge(Ok(_)),
                JoinOutcome::Challenge(Err(JoinRefusal::ForeignBundle {
                    field: "genesis leader key"
                })),
                JoinOutcome::Answer(Ok(_)),
            ]
        ),
        "{foreign:?}"
    );
    // Answering again on the same connection after the admission: no challenge pending.
    let again = run_join_setup(&[seeds[0].clone(), seeds[0].clone()].concat());
    assert!(
        matches!(
            again.as_slice(),
            [
                JoinOutcome::Challenge(Ok(_)),
                JoinOutcome::Answer(Ok(_)),
                JoinOutcome::Challenge(Err(JoinRefusal::Reused)),
                JoinOutcome::Answer(Err(JoinRefusal::Replayed)),
            ]
        ),
        "{again:?}"
    );
}

#[test]
fn the_real_joining_bundle_seed_holds_parseable_certificates_and_key() {
    let bundle = JoiningBundle::decode(&joining_bundles()[0]).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&bundle.ca_cert).unwrap();
    let (_, client) = x509_parser::parse_x509_certificate(&bundle.client_cert).unwrap();
    assert_eq!(client.issuer(), ca.subject());
    rcgen::KeyPair::try_from(bundle.client_key.as_slice()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_never_panics_a_decoder(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        sync_message(&data);
        mastered_record(&data);
        mastered_bundle(&data);
        fork_choice(&data);
        core_inputs(&data);
        audit_records(&data);
        backup_archive(&data);
        grants_payload(&data);
        joining_bundle(&data);
        join_setup(&data);
        setup_message(&data);
    }
}
