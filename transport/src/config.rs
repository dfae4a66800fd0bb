//! Transport configuration: sockets, sizes, queues and the gossip presets.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

/// Configuration of one transport (one swarm, one UDP port).
///
/// Build it from [`Config::default`] (a small cluster on all interfaces) or a preset
/// ([`Config::small_cluster`], [`Config::large_mesh`]) and override fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// UDP socket QUIC listens on and dials from. Port 0 picks a free port; the chosen address
    /// is reported as [`Event::Listening`](crate::Event::Listening).
    pub listen: SocketAddr,
    /// Gossipsub mesh parameters; see [`GossipConfig`].
    pub gossip: GossipConfig,
    /// How long a connection on which no protocol wants to stay alive is kept open.
    ///
    /// The transport's own keep-alive handler keeps every admitted connection alive, so this is
    /// a backstop only; dead peers are detected by QUIC's idle timeout (10 s, keep-alive pings
    /// every 5 s), not by this value. libp2p never redials a closed connection by itself, so a
    /// short value would silently thin out a quiet cluster; the node redials with
    /// [`Handle::dial`](crate::Handle::dial).
    pub idle_timeout: Duration,
    /// Largest gossip payload accepted by [`Handle::publish`](crate::Handle::publish), at most
    /// [`MAX_GOSSIP_BYTES`]. Larger changes are announced as a digest and fetched by a request.
    pub max_gossip_bytes: usize,
    /// Largest sync request (a digest) this node sends or accepts.
    pub max_request_bytes: usize,
    /// Largest sync response this node sends or accepts.
    pub max_response_bytes: usize,
    /// How long an outbound request waits for its response (and an inbound one for ours).
    pub request_timeout: Duration,
    /// Capacity of the transport → node event channel.
    pub event_queue: NonZeroUsize,
    /// Capacity of the node → transport command channel.
    pub command_queue: NonZeroUsize,
    /// How many inbound requests may wait for [`Handle::respond`](crate::Handle::respond);
    /// beyond it the oldest is dropped (its requester sees a failure) and counted.
    pub max_pending_responses: NonZeroUsize,
    /// The protocol version this node announces at identify; a peer announcing another is
    /// disconnected, naming both. Default [`IDENTIFY_VERSION`](crate::IDENTIFY_VERSION);
    /// tests set another to play a node of another major version.
    pub protocol_version: String,
}

/// Upper bound of [`Config::max_gossip_bytes`]: gossip is for small changes and digests.
pub const MAX_GOSSIP_BYTES: usize = 64 * 1024;

/// Gossipsub mesh parameters. Construct with a preset and adjust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipConfig {
    /// Target number of mesh peers (gossipsub `D`).
    pub mesh_n: usize,
    /// Fewer mesh peers than this triggers grafting (`D_low`).
    pub mesh_n_low: usize,
    /// More mesh peers than this triggers pruning (`D_high`).
    pub mesh_n_high: usize,
    /// Minimum outbound peers kept in the mesh (`D_out`); at most `mesh_n / 2`.
    pub mesh_outbound_min: usize,
    /// Whether our own messages go to every subscribed peer, not only the mesh.
    pub flood_publish: bool,
    /// Interval of the gossipsub heartbeat (mesh maintenance, IHAVE gossip).
    pub heartbeat_interval: Duration,
    /// Gossipsub v1.2 IDONTWANT for messages larger than this many bytes (the whole gossipsub
    /// message, payload and framing): on the first copy of such a message, before validating
    /// it, the node tells its other mesh peers it has it, and a peer that hears so before
    /// forwarding it does not send it to this node; our own messages are announced to the
    /// peers they go to. An IDONTWANT costs about 40 bytes per mesh peer, so messages at or
    /// below the threshold (adverts, about 200 bytes) go without. `usize::MAX` turns it off.
    pub idontwant_threshold: usize,
}

/// The default [`GossipConfig::idontwant_threshold`]: pushes (300 bytes and up) get
/// IDONTWANTs, adverts do not.
pub const IDONTWANT_THRESHOLD: usize = 256;

impl Default for Config {
    fn default() -> Self {
        Self::small_cluster()
    }
}

impl Config {
    /// A 2–7 node cluster: [`GossipConfig::small_cluster`] and the defaults below.
    pub fn small_cluster() -> Self {
        Self {
            // All interfaces, on a fixed port the operator opens in the firewall.
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7946)),
            gossip: GossipConfig::small_cluster(),
            // One hour: a backstop only (see the field doc); short enough that a connection no
            // handler wants is eventually reclaimed, long enough never to matter in practice.
            idle_timeout: Duration::from_secs(60 * 60),
            // The gossipsub ceiling we allow; a change set larger than this is announced as a
            // digest instead.
            max_gossip_bytes: MAX_GOSSIP_BYTES,
            // A sync digest: version vector plus heads per segment, far below this.
            max_request_bytes: 4 * 1024 * 1024,
            // meshward_crdt::MAX_WIRE: the largest compressed sync message the CRDT accepts.
            max_response_bytes: meshward_crdt::MAX_WIRE,
            // 32 MiB at a conservative 10 Mbit/s is ~27 s; 30 s covers the largest response.
            request_timeout: Duration::from_secs(30),
            // ~1 s of gossip at the measured small-cluster saturation (~900 msg/s); beyond it
            // gossip is dropped and anti-entropy repairs.
            event_queue: NonZeroUsize::new(1024).expect("1024 is not zero"),
            // Commands are cheap to apply; the node's actor loop enqueues a handful per input.
            command_queue: NonZeroUsize::new(1024).expect("1024 is not zero"),
            // A few concurrent sync sessions per peer at up to hundreds of peers.
            max_pending_responses: NonZeroUsize::new(256).expect("256 is not zero"),
            protocol_version: crate::IDENTIFY_VERSION.to_string(),
        }
    }

    /// Hundreds of nodes (simulation and emulation): [`GossipConfig::large_mesh`], otherwise
    /// as [`Config::small_cluster`].
    pub fn large_mesh() -> Self {
        Self {
            gossip: GossipConfig::large_mesh(),
            ..Self::small_cluster()
        }
    }

    /// A config for tests: listens on `127.0.0.1:0`, otherwise the default.
    pub fn localhost() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..Self::default()
        }
    }
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self::small_cluster()
    }
}

impl GossipConfig {
    /// Small clusters (2–7 nodes): mesh 3 (2..=4), one outbound peer, flood publishing,
    /// 250 ms heartbeat, IDONTWANT above [`IDONTWANT_THRESHOLD`] bytes.
    ///
    /// Measured on the project's 2-core machine with libp2p 0.57: with this mesh and flood
    /// publishing a 7-node cluster delivers in p50 0.4–0.6 ms, while the default mesh of 6
    /// (everyone meshed with everyone at 7 nodes) saturates near 900 msg/s. Flood publishing
    /// sends our own changes straight to every peer, so the mesh only matters for forwarding.
    /// A 250 ms heartbeat (default 1 s) repairs the mesh quickly after a reconnect.
    pub fn small_cluster() -> Self {
        Self {
            mesh_n: 3,
            mesh_n_low: 2,
            mesh_n_high: 4,
            mesh_outbound_min: 1,
            flood_publish: true,
            heartbeat_interval: Duration::from_millis(250),
            idontwant_threshold: IDONTWANT_THRESHOLD,
        }
    }

    /// Large meshes (tens to thousands of nodes): `D = 5`, `D_low = 4`, `D_high = 8`,
    /// `D_out = 2`, 1 s heartbeat, flood publishing, IDONTWANT above [`IDONTWANT_THRESHOLD`]
    /// bytes. A thinner mesh than the gossipsub spec's 6 (5..=12): each node gets a push about
    /// once per mesh peer, so this is 3.0 duplicate copies per node per push at 1 000 nodes
    /// against 4.9, for about 10 % more time to reach 99 % of the nodes; flood publishing
    /// (one send per connected peer, by the publisher only) gives the first hop the breadth
    /// the thinner mesh lacks (docs/simulation.md, "Duplicates").
    pub fn large_mesh() -> Self {
        Self {
            mesh_n: 5,
            mesh_n_low: 4,
            mesh_n_high: 8,
            mesh_outbound_min: 2,
            flood_publish: true,
            heartbeat_interval: Duration::from_secs(1),
            idontwant_threshold: IDONTWANT_THRESHOLD,
        }
    }
}
