//! Arguments of the commands that make, join, grow and leave a cluster: `init`, `join`,
//! `ha …` (seed 002's HA commands and joining codes), `bundle` and `licence`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

/// `meshward ha …`
#[derive(Debug, Subcommand)]
pub enum HaCmd {
    /// Roles and states of every member, as this node sees them.
    Status,
    /// Hand leadership to another member (run on the leader): a planned hand-over, epoch + 1.
    Demote {
        /// The next leader: its address as in the roster, or its id (at least 8 hex digits).
        #[arg(long)]
        to: String,
    },
    /// Hand leadership back to the primary, the node that created the cluster (run on the
    /// current leader after a failover, once the primary is back).
    Failback,
    /// Become the leader of the next epoch (run on a follower whose leader is gone): needs
    /// endorsements from a majority of the roster.
    Failover {
        /// Break-glass for a two-node pair whose other node is gone: take over alone. If the
        /// other node still leads elsewhere, the higher epoch wins when they meet and the
        /// other side's later mastered writes become superseded.
        #[arg(long)]
        force: bool,
    },
    /// Mastered records that lost when two leaders' chains met, for review.
    Superseded,
    /// Sign a superseded record's change again into the current chain (root; any node: a
    /// follower sends it to the leader with the record it holds). Revocations and removals are
    /// re-applied by the winning leader without this.
    Adopt {
        /// The record's hash, as `ha superseded` lists it.
        hash: String,
    },
    /// This node's HA command log, newest first: who ran what, when, on which node, with what
    /// result.
    Log {
        /// At most this many entries (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// On a new or standalone secondary (its daemon stopped): show a joining code, wait for
    /// the primary's `ha initialise` with it, and join the primary's cluster with the bundle
    /// and MEK it sends (seed 002's ha-create-joining-code).
    CreateJoiningCode(CodeArgs),
    /// On the primary (the leader, its daemon running): make an HA pair with the secondary
    /// that shows `--joining-code`: send it a joining bundle and the MEK, sealed to the code,
    /// and wait until it joined (seed 002's ha-initialise).
    Initialise {
        /// The code the secondary's `ha create-joining-code` shows.
        #[arg(long)]
        joining_code: String,
    },
    /// Leave the cluster and run standalone (on a follower: the leader removes it, then it
    /// starts again as its own one-node cluster, keeping the MEK, settings and session audit,
    /// with the old cluster's data in a sealed backup under DATA/backups/), or remove `--node`
    /// (on the leader). A removed node comes back with a joining bundle.
    MakeStandalone {
        /// The member to remove (leader only): address or id.
        #[arg(long)]
        node: Option<String>,
    },
}

/// `meshward init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// This node's address: FQDN or IP, optionally with its mesh port (unique in the cluster;
    /// an FQDN must resolve to a local address).
    #[arg(long)]
    pub address: String,
    /// UDP address `meshward run` listens on for the mesh (the setup endpoint uses the next
    /// port); stored, default 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The licence issuer's public key (64 hex digits, from the vendor's `licence keygen`),
    /// recorded in the cluster's genesis for good: only licences it signed are installed.
    /// Without it the cluster takes no licence and stays one node.
    #[arg(long, value_parser = meshward_node::licence::parse_issuer)]
    pub licence_issuer: Option<[u8; 32]>,
    /// The first admin user (the seeds' SuperAdmin), given `root`; its client certificate
    /// for the HTTPS admin API is written to --admin-certs.
    #[arg(long, default_value = "admin")]
    pub admin: String,
    /// Where the first admin's key (0600), certificate and the CA certificate go. Default:
    /// DATA/admin-certs.
    #[arg(long)]
    pub admin_certs: Option<PathBuf>,
}

/// `meshward join`
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The joining bundle file from the leader's `meshward bundle create`.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The cluster's MEK file.
    #[arg(long)]
    pub mek: PathBuf,
    /// This node's address (as for `init`).
    #[arg(long)]
    pub address: String,
    /// UDP address `meshward run` listens on for the mesh; stored, default 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// `meshward ha create-joining-code`
#[derive(Debug, Args)]
pub struct CodeArgs {
    /// This node's address (as for `join`).
    #[arg(long)]
    pub address: String,
    /// UDP address `meshward run` listens on for the mesh; stored, default 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// TCP address to wait for the primary at. Default: the node address (port 7400 if it
    /// names none).
    #[arg(long)]
    pub pairing_listen: Option<SocketAddr>,
    /// How long to wait for the primary (e.g. 15m).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub wait: std::time::Duration,
}

impl CodeArgs {
    /// What `ha create-joining-code` needs.
    pub fn options(&self) -> meshward_daemon::pairing::CodeOptions {
        meshward_daemon::pairing::CodeOptions {
            address: self.address.clone(),
            listen: self.listen,
            pairing: self.pairing_listen,
            wait: self.wait,
        }
    }
}

/// `meshward bundle …`
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Write a one-time joining bundle (leader only); it supersedes any earlier one.
    Create {
        /// How long it is valid: e.g. 30m, 2h, 24h (the default and the longest).
        #[arg(long, value_parser = meshward_node::config::parse_duration, default_value = "24h")]
        ttl: Duration,
        /// The file to write (mode 0600; must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `meshward licence …`
#[derive(Debug, Subcommand)]
pub enum LicenceCmd {
    /// Verify a licence file against the cluster's licence issuer (named at `init`) and store
    /// it (leader only).
    Install {
        /// The licence file.
        file: PathBuf,
    },
    /// Show the installed licence.
    Show,
    /// The vendor's side: make a licence issuer key pair. Writes FILE (the signing key, mode
    /// 0600: keep it offline) and FILE.pub (the public key), and prints the public key, which
    /// `init --licence-issuer` takes.
    Keygen {
        /// Where to write the signing key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// The vendor's side: sign a licence for one cluster.
    Issue {
        /// The issuer's signing key file, from `licence keygen`.
        #[arg(long)]
        issuer_key: PathBuf,
        /// The cluster's id, 32 hex digits (`meshward status` shows it).
        #[arg(long)]
        cluster: String,
        /// The most nodes the cluster may have, the leader included (1 to 4096).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
        nodes: u32,
        /// When it ends: a date (2027-12-31, midnight UTC), an RFC 3339 time
        /// (2027-12-31T12:00:00Z), or a duration from now (90d, 1y).
        #[arg(long)]
        expires: String,
        /// Whom it is for.
        #[arg(long, default_value = "")]
        customer: String,
        /// Where to write the licence file (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

impl InitArgs {
    /// What `init` needs.
    pub fn options(&self) -> meshward_node::lifecycle::InitOptions {
        meshward_node::lifecycle::InitOptions {
            address: self.address.clone(),
            listen: self.listen,
            licence_issuer: self.licence_issuer,
        }
    }
}

impl JoinArgs {
    /// What `join` needs.
    pub fn options(&self) -> meshward_daemon::setup::JoinOptions {
        meshward_daemon::setup::JoinOptions {
            bundle: self.bundle.clone(),
            mek: self.mek.clone(),
            address: self.address.clone(),
            listen: self.listen,
        }
    }
}
