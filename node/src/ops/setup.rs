//! The leader's answers on the setup endpoint: a joiner's hello gets a MEK challenge naming
//! the leader's cluster, its answer gets it admitted (the bundle burned by one compare-and-set,
//! the new roster written) or refused with the cause. Runs on the leader's live node through
//! a [`Backend`]; the daemon carries the bytes ([`crate::join::wire`]).

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use meshward_crdt::mastered::{Member, RecordKind, SignedRecord};
use tracing::info;

use super::{Backend, now_ms};
use crate::authority::{
    BUNDLE_STATE, address_host, bundle_state, ca_secret, current_licence, load_mek, open_ca,
};
use crate::join::wire::{SetupRequest, SetupResponse};
use crate::join::{Admission, BundleState, ClusterClaim, Facts, Hello, JoinRefusal};

/// The leader's answer to one setup request (never an error: a refusal is an answer).
pub fn serve_setup(
    backend: &mut dyn Backend,
    admission: &mut Admission,
    data: &Path,
    connection: u64,
    client_cert: [u8; 32],
    request: SetupRequest,
) -> SetupResponse {
    match answer_setup(backend, admission, data, connection, client_cert, request) {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(connection, error = %format!("{e:#}"), "setup request refused");
            SetupResponse::Refused {
                reason: format!("{e:#}"),
            }
        }
    }
}

fn answer_setup(
    backend: &mut dyn Backend,
    admission: &mut Admission,
    data: &Path,
    connection: u64,
    client_cert: [u8; 32],
    request: SetupRequest,
) -> anyhow::Result<SetupResponse> {
    let now = now_ms() as u64;
    let chain = backend.chain()?;
    let store = backend.store()?;
    let chain = crate::authority::leader_of(store, chain)?;
    let bundle = bundle_state(store)?;
    let licence = current_licence(store)?;
    let records: Vec<Vec<u8>> = store
        .mastered_records()?
        .iter()
        .map(SignedRecord::encode)
        .collect();
    // What the joiner checks our final answer against, so that it is checked before anything
    // is committed: the trust anchor and the CA of the mastered chain.
    let ours = ClusterClaim::new(
        chain.cluster().0,
        store.anchor()?.context("no trust anchor")?.genesis_leader,
        &ca_secret(&records)?.public,
    );
    let facts = Facts {
        bundle: bundle.as_ref(),
        roster: chain.roster(),
        licence: licence.as_ref(),
        cluster: ours,
    };
    match request {
        SetupRequest::JoinHello { .. } => bail!(
            "this joiner runs an older meshward whose hello does not say which cluster its \
             bundle is for; upgrade meshward on the joining node"
        ),
        SetupRequest::JoinHelloV2 {
            node_key,
            address,
            tls_key,
            cluster,
            genesis_leader,
            ca_cert,
        } => {
            let hello = Hello {
                member: Member {
                    key: node_key,
                    address,
                },
                tls_key,
                claim: ClusterClaim {
                    cluster,
                    genesis_leader,
                    ca_cert,
                },
            };
            let nonce = admission.hello(now, connection, client_cert, hello, facts)?;
            Ok(SetupResponse::ChallengeV2 {
                nonce,
                cluster: ours.cluster,
                genesis_leader: ours.genesis_leader,
                ca_cert: ours.ca_cert,
            })
        }
        SetupRequest::JoinAnswer { answer, signature } => {
            let mek = load_mek(data)?;
            let admit = admission.answer(now, connection, answer, &signature, &mek, facts)?;
            let ca = open_ca(store, chain.cluster(), &mek)?;
            let node_cert = ca.issue_node(
                &admit.tls_key,
                address_host(&admit.member.address),
                SystemTime::now(),
            )?;
            // The durable "used" mark is the arbiter between racing joiners: only one
            // compare-and-set from the unused state succeeds.
            let before = bundle.context("no bundle")?;
            let after = BundleState {
                used_by: Some(admit.member.key),
                ..before.clone()
            };
            if !store.swap_blob(
                BUNDLE_STATE,
                &postcard::to_allocvec(&before)?,
                &postcard::to_allocvec(&after)?,
            )? {
                return Err(JoinRefusal::Reused.into());
            }
            backend.master(RecordKind::Roster, admit.roster.encode())?;
            info!(
                node = %hex::encode(&admit.member.key[..8]),
                address = %admit.member.address,
                "node joined the cluster"
            );
            let store = backend.store()?;
            Ok(SetupResponse::Joined {
                cluster: chain.cluster().0,
                genesis_leader: store.anchor()?.context("no trust anchor")?.genesis_leader,
                records: store
                    .mastered_records()?
                    .iter()
                    .map(SignedRecord::encode)
                    .collect(),
                node_cert,
            })
        }
    }
}
