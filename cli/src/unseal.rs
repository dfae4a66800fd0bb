//! `meshward unseal`: installs the MEK of a sealed node, through its sealed daemon or on the
//! store when no daemon runs.

use std::io::Write;

use anyhow::Context as _;
use meshward_api::Request;
use meshward_api::node::Unseal;
use meshward_node::disk::read_bounded;

use crate::args::{Global, UnsealArgs};
use crate::door::Door;

/// `meshward unseal --mek FILE`: sends the key to the sealed daemon, or installs it on the
/// store when no daemon runs.
pub fn unseal_command(g: &Global, args: &UnsealArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let text = zeroize::Zeroizing::new(
        String::from_utf8(read_bounded(&args.mek, 4096)?)
            .with_context(|| format!("{} is not text", args.mek.display()))?,
    );
    let mut door = Door::new(g)?;
    door.send(Request::Unseal(Unseal {
        mek: text.to_string(),
    }))?;
    if g.json {
        writeln!(out, "{}", serde_json::json!({"unsealed": true}))?;
    } else {
        writeln!(out, "unsealed")?;
    }
    Ok(())
}
