//! The setup endpoint's glue: `meshward join` (a joiner talking to the leader's endpoint), the
//! node's TLS identity and gate for the endpoint.
//!
//! `join` runs the protocol of [`meshward_node::join`] (its messages are
//! [`meshward_node::join::wire`]) against the leader's setup endpoint, verifies every mastered
//! record it receives from the bundle's trust anchor before storing any, and keeps a copy of
//! the MEK (0600). The leader answers with [`meshward_node::ops::setup::serve_setup`] on its
//! live node (the actor).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use meshward_crdt::mastered::{Chain, Member, SignedRecord, TrustAnchor};
use meshward_transport::setup::{Gate, SetupClient, SetupError, TlsIdentity};
use tracing::info;

use meshward_node::authority::ca_secret;
use meshward_node::disk::read_bounded;
use meshward_node::join::wire::{SetupRequest, SetupResponse};
use meshward_node::join::{ClusterClaim, Hello, JoiningBundle, MAX_JOINING_BUNDLE};
use meshward_node::lifecycle::{check_address, store_credentials};
use meshward_node::mek::{MEK_FILE, Mek};
use meshward_node::roster::MasteredBundle;
use meshward_node::setup_gate::SetupGate;
use meshward_node::store::Store;

/// How long `join` waits to resolve the leader's address.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `join` needs.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// The joining bundle file from the leader's `meshward bundle create`.
    pub bundle: PathBuf,
    /// The cluster's MEK file.
    pub mek: PathBuf,
    /// This node's address (as for `init`).
    pub address: String,
    /// The mesh address `meshward run` listens on, stored (default 127.0.0.1:7400).
    pub listen: Option<SocketAddr>,
}

/// `meshward join`: joins the cluster of a joining bundle.
pub fn join(data: &Path, args: &JoinOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    let bytes = read_bounded(&args.bundle, MAX_JOINING_BUNDLE)?;
    let bundle = JoiningBundle::decode(&bytes)
        .with_context(|| format!("joining bundle {}", args.bundle.display()))?;
    let mek = Mek::load(&args.mek)?;
    join_with(data, &bundle, &mek, &args.address, args.listen, out)
}

/// Joins the cluster of `bundle` with its MEK (`meshward join`, and a secondary that got both
/// from the primary with a joining code): as `address`, storing `listen` as the mesh address.
pub fn join_with(
    data: &Path,
    bundle: &JoiningBundle,
    mek: &Mek,
    address: &str,
    listen: Option<SocketAddr>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    check_address(address)?;
    let store =
        Store::open(data).with_context(|| format!("opening the store in {}", data.display()))?;
    let standalone = meshward_node::standalone::may_join(data, &store)?;
    let identity = store.identity()?;
    let member = Member {
        key: identity.key.verifying_key().to_bytes(),
        address: address.to_owned(),
    };
    let (tls_key, tls_public) = meshward_node::pki::node_key()?;
    let claim = ClusterClaim::of_bundle(bundle);
    let hello = Hello {
        member: member.clone(),
        tls_key: tls_public.clone(),
        claim,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let joined = runtime.block_on(async {
        let addr = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(&bundle.setup_addr))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|mut a| a.next())
            .with_context(|| format!("the leader's setup address {} does not resolve", bundle.setup_addr))?;
        let tls = TlsIdentity {
            cert: bundle.client_cert.clone(),
            key: bundle.client_key.clone(),
            ca: bundle.ca_cert.clone(),
        };
        let client = match SetupClient::connect(addr, &bundle.server_name, &tls).await {
            Ok(client) => client,
            Err(SetupError::Refused { reason, .. }) => {
                bail!("the leader refused the join: {reason}")
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot reach the leader's setup endpoint at {}; is `meshward run` running on the leader?",
                        bundle.setup_addr
                    )
                });
            }
        };
        // One request, its answer decoded.
        let ask = |request: SetupRequest| {
            let client = &client;
            async move {
                let bytes = client.request(&request.encode()).await?;
                SetupResponse::decode(&bytes).context(
                    "the leader's answer does not decode; does it run the same meshward version?",
                )
            }
        };
        let exchange = async {
            let request = SetupRequest::JoinHelloV2 {
                node_key: member.key,
                address: member.address.clone(),
                tls_key: tls_public.clone(),
                cluster: claim.cluster,
                genesis_leader: claim.genesis_leader,
                ca_cert: claim.ca_cert,
            };
            let nonce = leader_challenge(ask(request).await?, &claim)?;
            let (answer, signature) =
                meshward_node::join::respond(mek, &identity.key, &nonce, &bundle.id, &hello);
            ask(SetupRequest::JoinAnswer { answer, signature }).await
        };
        let reply: anyhow::Result<SetupResponse> = exchange.await;
        // On every path, so the leader's endpoint frees the slot at once.
        client.close().await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => match e.downcast_ref::<SetupError>() {
                Some(SetupError::Refused { reason, .. }) => {
                    bail!("the leader refused the join: {reason}")
                }
                _ => return Err(e),
            },
        };
        match reply {
            SetupResponse::Joined {
                cluster,
                genesis_leader,
                records,
                node_cert,
            } => anyhow::Ok((cluster, genesis_leader, records, node_cert)),
            SetupResponse::Refused { reason } => bail!("the leader refused the join: {reason}"),
            other => bail!("unexpected answer from the leader: {other:?}"),
        }
    })?;
    let (cluster, genesis_leader, records, node_cert) = joined;
    anyhow::ensure!(
        cluster == bundle.cluster && genesis_leader == bundle.genesis_leader,
        "the leader answered for another cluster than the bundle's; nothing was stored"
    );
    let anchor = TrustAnchor {
        cluster: meshward_crdt::ClusterId(cluster),
        genesis_leader,
    };
    // Verify every record from the anchor before storing anything.
    let mut chain = Chain::new(anchor);
    for (i, raw) in records.iter().enumerate() {
        let record = SignedRecord::decode(raw)
            .with_context(|| format!("mastered record {i} from the leader"))?;
        let verified = chain
            .verify(&record)
            .with_context(|| format!("mastered record {i} from the leader does not verify"))?;
        chain
            .apply(verified)
            .map_err(|_| anyhow::anyhow!("mastered record {i} did not apply"))?;
    }
    anyhow::ensure!(
        chain.roster().members.contains(&member),
        "the leader's roster does not list this node; nothing was stored"
    );
    let ca = ca_secret(&records)?;
    anyhow::ensure!(
        ca.public == bundle.ca_cert,
        "the cluster CA in the mastered chain differs from the bundle's; nothing was stored"
    );
    let encoded = MasteredBundle {
        cluster,
        genesis_leader,
        records,
    }
    .encode();
    if standalone {
        let backup = meshward_node::standalone::leave_for_join(data, &store)?;
        writeln!(
            out,
            "this node left its standalone cluster; its data is in {} (sealed with its old MEK, moved beside it)",
            backup.display()
        )?;
    }
    mek.write_new(&data.join(MEK_FILE))?;
    let stored = (|| -> anyhow::Result<()> {
        meshward_node::roster::import(&store, &encoded)?;
        store_credentials(&store, &node_cert, &tls_key, &bundle.ca_cert, listen)
    })();
    if let Err(e) = stored {
        let _ = std::fs::remove_file(data.join(MEK_FILE));
        return Err(e.context("storing the cluster's records"));
    }
    info!(cluster = %anchor.cluster.to_hex(), "joined the cluster");
    writeln!(
        out,
        "joined cluster {} as {} ({} members); the MEK copy is in {}.\nStart the node with `meshward --data {} run`.",
        anchor.cluster.to_hex(),
        address,
        chain.roster().members.len(),
        data.join(MEK_FILE).display(),
        data.display()
    )?;
    Ok(())
}

/// The nonce of the leader's answer to our hello, once the leader's cluster is the one our
/// bundle names (`claim`); nothing is answered otherwise.
fn leader_challenge(reply: SetupResponse, claim: &ClusterClaim) -> anyhow::Result<[u8; 32]> {
    match reply {
        SetupResponse::ChallengeV2 {
            nonce,
            cluster,
            genesis_leader,
            ca_cert,
        } => {
            let theirs = ClusterClaim {
                cluster,
                genesis_leader,
                ca_cert,
            };
            if let Some(field) = claim.differs_from(&theirs) {
                bail!(
                    "the leader's {field} is not the joining bundle's: the bundle was altered or \
                     belongs to another cluster; nothing was sent or stored: use the file exactly \
                     as `meshward bundle create` wrote it"
                );
            }
            Ok(nonce)
        }
        SetupResponse::Challenge { .. } => bail!(
            "the leader runs an older meshward that does not confirm its cluster; upgrade \
             meshward on the leader first"
        ),
        SetupResponse::Refused { reason } => bail!("the leader refused the join: {reason}"),
        other => bail!("unexpected answer from the leader: {other:?}"),
    }
}

/// The node's TLS identity for the setup endpoint, if it was initialised or joined.
pub fn tls_identity(store: &Store) -> anyhow::Result<Option<TlsIdentity>> {
    Ok(
        meshward_node::lifecycle::tls_blobs(store)?.map(|t| TlsIdentity {
            cert: t.cert,
            key: t.key,
            ca: t.ca,
        }),
    )
}

/// The node's [`SetupGate`] as the transport's setup endpoint asks it.
#[derive(Debug)]
pub struct EndpointGate(pub Arc<SetupGate>);

impl Gate for EndpointGate {
    fn admit(&self, cert: &[u8]) -> Result<(), String> {
        self.0.check(cert).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_endpoint_gets_the_gates_reason_as_text() {
        let gate = EndpointGate(Arc::new(SetupGate::default()));
        let refused = gate.admit(b"not a certificate").unwrap_err();
        assert!(refused.contains("does not parse"), "{refused}");
    }
}
