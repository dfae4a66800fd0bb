//! The swarm's combined behaviour and its configuration: admission, gossipsub, the sync
//! request-response protocol and identify, built from a checked [`Config`].

use std::collections::BTreeSet;

use libp2p::gossipsub::{self, MessageAuthenticity, ValidationMode};
use libp2p::identify;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use sha2::{Digest, Sha256};

use super::ids::peer_ids;
use crate::admission::Admission;
use crate::codec::{Codec, SYNC_PROTOCOL};
use crate::{Config, MAX_GOSSIP_BYTES, TOPIC, TransportError, WriterId};

/// Room for the gossipsub RPC framing around a payload (topic, field tags, lengths). The
/// gossipsub transmit limit is twice `max_gossip_bytes` plus this: a payload at the limit is
/// never refused by the receiver's frame check, and one over it (up to twice) reaches
/// `Task::on_gossip`, which rejects and counts it, instead of vanishing in the frame codec.
pub(super) const RPC_OVERHEAD: usize = 1024;

/// The combined behaviour. Admission comes first so a denied connection gets no handler.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(super) admission: Admission,
    pub(super) gossipsub: gossipsub::Behaviour,
    pub(super) sync: request_response::Behaviour<Codec>,
    pub(super) identify: identify::Behaviour,
}

pub(super) fn check_config(config: &Config) -> Result<(), TransportError> {
    let invalid = |msg: String| Err(TransportError::InvalidConfig(msg));
    if config.max_gossip_bytes == 0 || config.max_gossip_bytes > MAX_GOSSIP_BYTES {
        return invalid(format!(
            "max_gossip_bytes is {}; use 1..={MAX_GOSSIP_BYTES}",
            config.max_gossip_bytes
        ));
    }
    for (name, value) in [
        ("max_request_bytes", config.max_request_bytes),
        ("max_response_bytes", config.max_response_bytes),
    ] {
        if u32::try_from(value).is_err() {
            return invalid(format!("{name} is {value}; use at most {}", u32::MAX));
        }
    }
    let g = &config.gossip;
    if !(g.mesh_outbound_min <= g.mesh_n_low
        && g.mesh_n_low <= g.mesh_n
        && g.mesh_n <= g.mesh_n_high
        && g.mesh_outbound_min * 2 <= g.mesh_n
        && g.mesh_n > 0)
    {
        return invalid(format!(
            "gossip mesh needs 2*outbound_min <= n and outbound_min <= n_low <= n <= n_high, \
             got {g:?}"
        ));
    }
    if g.heartbeat_interval.is_zero() {
        return invalid("gossip heartbeat_interval is zero".into());
    }
    Ok(())
}

/// The gossipsub configuration of `config`.
pub(super) fn gossipsub_config(config: &Config) -> Result<gossipsub::Config, TransportError> {
    let g = &config.gossip;
    gossipsub::ConfigBuilder::default()
        .mesh_n(g.mesh_n)
        .mesh_n_low(g.mesh_n_low)
        .mesh_n_high(g.mesh_n_high)
        .mesh_outbound_min(g.mesh_outbound_min)
        .flood_publish(g.flood_publish)
        .heartbeat_interval(g.heartbeat_interval)
        // Default 5 s; the first mesh should form as soon as peers connect.
        .heartbeat_initial_delay(g.heartbeat_interval)
        // Gossipsub v1.2: see `GossipConfig::idontwant_threshold`.
        .idontwant_message_size_threshold(g.idontwant_threshold)
        .idontwant_on_publish(true)
        .max_transmit_size(2 * config.max_gossip_bytes + RPC_OVERHEAD)
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(|message| gossipsub::MessageId::new(&Sha256::digest(&message.data)))
        .build()
        .map_err(|err| TransportError::InvalidConfig(format!("gossipsub: {err}")))
}

pub(super) fn behaviour(
    keypair: &Keypair,
    roster: &BTreeSet<WriterId>,
    config: &Config,
    codec: Codec,
) -> Result<Behaviour, TransportError> {
    let mut gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossipsub_config(config)?)
            .map_err(|err| TransportError::Build(format!("gossipsub: {err}")))?;
    gossipsub
        .subscribe(&gossipsub::IdentTopic::new(TOPIC))
        .map_err(|err| TransportError::Build(format!("gossipsub subscribe: {err}")))?;

    let sync = request_response::Behaviour::with_codec(
        codec,
        [(SYNC_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(config.request_timeout),
    );
    let identify = identify::Behaviour::new(identify::Config::new(
        config.protocol_version.clone(),
        keypair.public(),
    ));
    Ok(Behaviour {
        admission: Admission::new(peer_ids(roster)),
        gossipsub,
        sync,
        identify,
    })
}
