//! Arguments of `meshward credential …`: managed accounts' secrets (see
//! [`meshward_api::credentials`]). Secrets are read from stdin, never from the command line.

use clap::Subcommand;

/// `meshward credential …`
#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    /// Set an account's secret to the one read from stdin (one line). A new rotation by this
    /// node, also during a partition. Needs admin:NAMESPACE or root.
    Set {
        /// The account, NAMESPACE/DEVICE/ACCOUNT.
        address: String,
        /// Why (one line).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Rotate an account's secret: a generated one (--length characters of --alphabet), or
    /// with --stdin the one read from stdin. The new secret is not shown: reveal it.
    Rotate {
        /// The account, NAMESPACE/DEVICE/ACCOUNT.
        address: String,
        /// Read the new secret from stdin (one line) instead of generating one.
        #[arg(long, conflicts_with_all = ["length", "alphabet"])]
        stdin: bool,
        /// Length of the generated secret (8 to 256; default 32).
        #[arg(long)]
        length: Option<usize>,
        /// Characters of the generated secret: alnum (default), hex or printable.
        #[arg(long)]
        alphabet: Option<String>,
        /// Why (one line).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show an account's current secret, or one version's (recorded in this node's audit).
    /// Needs admin:NAMESPACE or root.
    Reveal {
        /// The account, NAMESPACE/DEVICE/ACCOUNT.
        address: String,
        /// A version as `credential history` shows it (MS.COUNTER@WRITER).
        #[arg(long)]
        version: Option<String>,
    },
    /// An account's rotations as this node holds them: versions, who, when, why; no secrets.
    History {
        /// The account, NAMESPACE/DEVICE/ACCOUNT.
        address: String,
    },
    /// Accounts rotated concurrently (e.g. on both sides of a partition) that no later
    /// rotation has settled yet, with every version in conflict.
    Conflicts {
        /// Only this namespace (without it: every namespace, which needs guest:* or root).
        #[arg(long)]
        namespace: Option<String>,
    },
}
