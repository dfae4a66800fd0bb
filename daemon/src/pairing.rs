//! The network side of joining codes (seed 002's `ha-create-joining-code` and
//! `ha-initialise`; the protocol is [`meshward_node::join::code`]).
//!
//! The secondary waits at its pairing address, a TCP port (by default its node address: the
//! mesh runs on UDP, so the TCP port of the same number is free while the node is not yet a
//! member). The primary connects and sends one frame: [`MAGIC`], the offer's length (u32,
//! big-endian) and the sealed offer. The secondary answers one frame: a status byte (0 joined,
//! 1 refused), the text's length (u16, big-endian) and the text. An offer that does not open
//! is answered "refused" and the secondary keeps waiting (up to [`MAX_ATTEMPTS`] of them);
//! one that opens is joined with at once, and the secondary stops waiting either way.
//!
//! Every read is bounded in size and time; the secondary serves one connection at a time.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use meshward_node::join::code::{CodeKeys, JoiningCode, MAX_OFFER, seal_offer};
use meshward_node::mek::Mek;
use meshward_node::store::Store;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

/// First bytes of an offer frame.
pub const MAGIC: &[u8; 8] = b"mwpair1\n";
/// Offers that do not open before the secondary stops waiting.
pub const MAX_ATTEMPTS: u32 = 16;
/// How long one connection may take to deliver its offer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the primary waits for the secondary's answer (it joins meanwhile).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the primary waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer text.
const MAX_ANSWER: usize = 4096;

/// What `ha create-joining-code` needs.
#[derive(Clone, Debug)]
pub struct CodeOptions {
    /// This node's address (as for `join`).
    pub address: String,
    /// The mesh address `meshward run` will listen on, stored (as for `join`).
    pub listen: Option<SocketAddr>,
    /// The TCP address to wait at; default: the node address with its port (7400 if none).
    pub pairing: Option<SocketAddr>,
    /// How long to wait for the primary.
    pub wait: Duration,
}

/// `meshward ha create-joining-code`: shows a joining code on `out`, waits for the primary's
/// offer and joins its cluster with it.
pub fn create_joining_code(
    data: &Path,
    args: &CodeOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    meshward_node::lifecycle::check_address(&args.address)?;
    {
        let store = Store::open(data).with_context(|| {
            format!(
                "opening the store in {}; is the node running? stop it first",
                data.display()
            )
        })?;
        meshward_node::standalone::may_join(data, &store)?;
    }
    let pairing = match args.pairing {
        Some(addr) => addr,
        None => pairing_address(&args.address)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let listener = runtime
        .block_on(TcpListener::bind(pairing))
        .with_context(|| format!("waiting at {pairing}; give another --pairing-listen"))?;
    let keys = CodeKeys::generate(advertised(&args.address, pairing), &mut rand::rngs::OsRng);
    writeln!(
        out,
        "Joining code (run `meshward ha initialise --joining-code CODE` on the primary):\n\n    {}\n",
        keys.code().encode().as_str()
    )?;
    out.flush()?;
    eprintln!(
        "waiting up to {} at {pairing} for the primary…",
        humantime::format_duration(args.wait)
    );
    let deadline = tokio::time::Instant::now() + args.wait;
    let mut refused = 0;
    let (mut stream, bundle, mek) = runtime.block_on(async {
        loop {
            let accepted = tokio::time::timeout_at(deadline, listener.accept()).await;
            let Ok(accepted) = accepted else {
                bail!(
                    "no primary sent an offer within {}; create a new code",
                    humantime::format_duration(args.wait)
                );
            };
            let Ok((mut stream, peer)) = accepted else {
                continue;
            };
            let offer = match tokio::time::timeout(READ_TIMEOUT, read_offer(&mut stream)).await {
                Ok(Ok(offer)) => offer,
                Ok(Err(e)) => {
                    warn!(%peer, error = %format!("{e:#}"), "pairing connection refused");
                    let _ = answer(&mut stream, false, &format!("{e:#}")).await;
                    continue;
                }
                Err(_) => continue,
            };
            match keys.open(&offer) {
                Ok((bundle, mek)) => {
                    info!(%peer, "the primary's offer opened; joining its cluster");
                    return Ok((stream, bundle, mek));
                }
                Err(e) => {
                    refused += 1;
                    warn!(%peer, "an offer did not open with this joining code");
                    let _ = answer(&mut stream, false, &e.to_string()).await;
                    if refused >= MAX_ATTEMPTS {
                        bail!("{refused} offers did not open with this code; create a new code");
                    }
                }
            }
        }
    })?;
    drop(listener);
    // The join runs its own runtime: outside this one.
    let mut report = Vec::new();
    let joined =
        crate::setup::join_with(data, &bundle, &mek, &args.address, args.listen, &mut report);
    let text = String::from_utf8_lossy(&report).into_owned();
    let told = match &joined {
        Ok(()) => runtime.block_on(answer(&mut stream, true, text.trim())),
        Err(e) => runtime.block_on(answer(&mut stream, false, &format!("{e:#}"))),
    };
    if let Err(e) = told {
        warn!(error = %e, "the primary did not get the answer");
    }
    joined?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// `meshward ha initialise`: seals `bundle` (a joining bundle file) and `mek` to the joining
/// `code`, delivers them to the secondary, and returns its answer once it joined.
pub fn initialise(code: &str, bundle: &[u8], mek: &Mek) -> anyhow::Result<String> {
    let code = JoiningCode::decode(code)?;
    let offer = seal_offer(&code, bundle, mek, &mut rand::rngs::OsRng);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&code.pairing))
            .await
            .ok()
            .and_then(Result::ok)
            .with_context(|| {
                format!(
                    "cannot reach the secondary at {}; is `meshward ha create-joining-code` still waiting there?",
                    code.pairing
                )
            })?;
        let len = u32::try_from(offer.len()).context("the offer is too large")?;
        stream.write_all(MAGIC).await?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&offer).await?;
        stream.flush().await?;
        let (joined, text) = tokio::time::timeout(ANSWER_TIMEOUT, read_answer(&mut stream))
            .await
            .context("the secondary did not answer in time; check `meshward ha status`")??;
        if !joined {
            bail!("the secondary refused: {text}");
        }
        Ok(text)
    })
}

/// The default pairing address: the node address's host and port (7400 when it has none).
fn pairing_address(address: &str) -> anyhow::Result<SocketAddr> {
    let with_port = if meshward_node::authority::address_host(address) == address {
        format!("{address}:7400")
    } else {
        address.to_owned()
    };
    std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("address {address:?} does not resolve; give --pairing-listen"))
}

/// The pairing address the code names: the node address's host with the port waited at (an
/// unspecified bind address is not one the primary can reach).
fn advertised(address: &str, pairing: SocketAddr) -> String {
    let host = meshward_node::authority::address_host(address);
    if host.contains(':') {
        format!("[{host}]:{}", pairing.port())
    } else {
        format!("{host}:{}", pairing.port())
    }
}

async fn read_offer(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        bail!("not a meshward pairing offer");
    }
    let len = stream.read_u32().await? as usize;
    if len > MAX_OFFER {
        bail!("the offer is {len} bytes, over the {MAX_OFFER}-byte limit");
    }
    let mut offer = vec![0u8; len];
    stream.read_exact(&mut offer).await?;
    Ok(offer)
}

async fn answer(stream: &mut TcpStream, joined: bool, text: &str) -> std::io::Result<()> {
    let text = &text.as_bytes()[..text.len().min(MAX_ANSWER)];
    stream.write_u8(u8::from(!joined)).await?;
    stream.write_u16(text.len() as u16).await?;
    stream.write_all(text).await?;
    stream.flush().await
}

async fn read_answer(stream: &mut TcpStream) -> anyhow::Result<(bool, String)> {
    let status = stream
        .read_u8()
        .await
        .context("the secondary closed the connection without an answer")?;
    let len = stream.read_u16().await? as usize;
    if len > MAX_ANSWER || status > 1 {
        bail!("the secondary's answer is not a pairing answer");
    }
    let mut text = vec![0u8; len];
    stream.read_exact(&mut text).await?;
    Ok((status == 0, String::from_utf8_lossy(&text).into_owned()))
}
