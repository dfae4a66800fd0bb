//! Crash safety of the session audit: the writer is killed with SIGKILL mid-stream, round after
//! round, on the same store. Every record it acknowledged must be there afterwards with the
//! content that was sent, and the chain must verify.

use std::io::{BufRead as _, BufReader, BufWriter, Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use meshward_node::audit::{AuditLog, AuditRecord};
use meshward_tests::{SplitMix64, meshward_bin};

/// Kill-and-restart rounds.
const ROUNDS: u64 = 15;
/// Seed of the kill delays; printed on failure.
const SEED: u64 = 0x6d65_7368_7761_7264;
/// Longest wait for the first ack of a round (a debug build on a busy 2-core machine).
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// The kill comes this long after the first ack: 0 up to this many milliseconds.
const MAX_KILL_DELAY_MS: u64 = 150;
/// Bound on the lines fed in a round; far more than a round can take before its kill.
const MAX_LINES_PER_ROUND: u64 = 2_000_000;

#[test]
fn acked_audit_records_survive_sigkill_and_the_chain_verifies() -> anyhow::Result<()> {
    let bin = meshward_bin();
    let dir = tempfile::tempdir()?;
    let mut rng = SplitMix64(SEED);
    // Every acked record so far: (seq, round, line index).
    let mut acked: Vec<(u64, u64, u64)> = Vec::new();
    let mut unacked_durable_rounds = 0;
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.next() % (MAX_KILL_DELAY_MS + 1));
        let outcome = run_round(&bin, dir.path(), round, delay)
            .with_context(|| format!("round {round} (seed {SEED:#x}, kill delay {delay:?})"))?;
        let last_before = acked.last().map_or(0, |a| a.0);
        for (line, seq) in outcome.acks.iter().enumerate() {
            acked.push((*seq, round, line as u64));
        }
        ensure!(
            acked.windows(2).all(|w| w[0].0 < w[1].0),
            "round {round}: acked seqs are not increasing across rounds"
        );
        ensure!(
            outcome.acks.first().is_none_or(|&s| s > last_before),
            "round {round}: seqs restarted"
        );
        let head = check_store(dir.path(), &acked).with_context(|| {
            format!(
                "round {round} (seed {SEED:#x}, kill delay {delay:?}), writer stderr:\n{}",
                outcome.stderr
            )
        })?;
        if head > acked.last().map_or(0, |a| a.0) {
            unacked_durable_rounds += 1;
        }
    }
    ensure!(!acked.is_empty(), "no record was ever acked");
    eprintln!(
        "{} records acked over {ROUNDS} rounds; {unacked_durable_rounds} rounds ended with \
         durable records not yet acked",
        acked.len()
    );
    Ok(())
}

struct RoundOutcome {
    /// Acked seqs in input order: the k-th ack answers the k-th line.
    acks: Vec<u64>,
    stderr: String,
}

/// Starts the writer, feeds it, kills it `delay` after its first ack, reaps it.
fn run_round(bin: &Path, data: &Path, round: u64, delay: Duration) -> anyhow::Result<RoundOutcome> {
    let child = Command::new(bin)
        .args(["audit", "record", "--stdin", "--data"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting meshward audit record")?;
    let mut child = KillOnDrop(Some(child));
    let pid = child.pid()?;
    let (stdin, stdout, mut stderr) = {
        let c = child.get()?;
        (
            c.stdin.take().context("no stdin")?,
            c.stdout.take().context("no stdout")?,
            c.stderr.take().context("no stderr")?,
        )
    };

    let feeder = thread::spawn(move || {
        let mut stdin = BufWriter::new(stdin);
        for line in 0..MAX_LINES_PER_ROUND {
            let (actor, action, target, detail) = fields(round, line);
            if writeln!(stdin, "{actor}\t{action}\t{target}\t{detail}").is_err() {
                return;
            }
            if line % 64 == 0 && stdin.flush().is_err() {
                return;
            }
        }
    });
    let (first_ack_tx, first_ack_rx) = mpsc::channel();
    let reader = thread::spawn(move || -> anyhow::Result<Vec<u64>> {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let Some(seq) = line.strip_prefix("ack ") else {
                bail!("unexpected writer output {line:?}");
            };
            acks.push(seq.parse()?);
            if acks.len() == 1 {
                let _ = first_ack_tx.send(());
            }
        }
        Ok(acks)
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let first_ack = first_ack_rx.recv_timeout(FIRST_ACK_TIMEOUT);
    if first_ack.is_ok() {
        thread::sleep(delay);
    }
    sigkill(pid)?;
    let status = child.reap()?;
    let _ = feeder.join();
    let acks = reader
        .join()
        .map_err(|_| anyhow::anyhow!("ack reader panicked"))?;
    let stderr = stderr_reader.join().unwrap_or_default();
    ensure!(
        first_ack.is_ok(),
        "no ack within {FIRST_ACK_TIMEOUT:?}; stderr:\n{stderr}"
    );
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "the writer was not killed mid-write: it ended with {status}; stderr:\n{stderr}"
    );
    Ok(RoundOutcome {
        acks: acks.with_context(|| format!("reading acks; stderr:\n{stderr}"))?,
        stderr,
    })
}

/// Reopens the store: the chain verifies, and every acked record is there with its content.
/// Returns the head seq.
fn check_store(data: &Path, acked: &[(u64, u64, u64)]) -> anyhow::Result<u64> {
    let db = redb::Database::open(data.join("meshward.redb")).context("reopening the store")?;
    let report = AuditLog::verify(&db)?;
    ensure!(report.is_intact(), "chain broken: {report:?}");
    let records = AuditLog::list(&db, 1, usize::MAX)?;
    ensure!(
        records.len() as u64 == report.verified,
        "listed {} records, verified {}",
        records.len(),
        report.verified
    );
    for &(seq, round, line) in acked {
        let record: &AuditRecord = usize::try_from(seq - 1)
            .ok()
            .and_then(|i| records.get(i))
            .with_context(|| format!("acked seq {seq} is missing"))?;
        let (actor, action, target, detail) = fields(round, line);
        ensure!(
            record.seq == seq
                && (
                    record.actor.as_str(),
                    record.action.as_str(),
                    record.target.as_str()
                ) == (actor.as_str(), action, target.as_str())
                && record.detail == detail,
            "acked seq {seq} holds {record:?}, not round {round} line {line}"
        );
    }
    Ok(report.head.map_or(0, |h| h.seq))
}

/// The content of line `line` of round `round`.
fn fields(round: u64, line: u64) -> (String, &'static str, String, String) {
    (
        format!("user{}", line % 7),
        "session.command",
        format!("srv-{round}"),
        format!("round {round} line {line}\tls -la /etc"),
    )
}

/// Sends SIGKILL to `pid`.
#[allow(unsafe_code)]
fn sigkill(pid: libc::pid_t) -> anyhow::Result<()> {
    // SAFETY: kill(2) takes two integers and touches none of our memory. `pid` is our own
    // child, not yet reaped, so the id cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    ensure!(
        rc == 0,
        "kill({pid}, SIGKILL): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// A child process that is killed and reaped if the test leaves early.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn get(&mut self) -> anyhow::Result<&mut Child> {
        self.0.as_mut().context("child already reaped")
    }

    fn pid(&mut self) -> anyhow::Result<libc::pid_t> {
        Ok(libc::pid_t::try_from(self.get()?.id())?)
    }

    fn reap(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.0.take().context("child already reaped")?;
        Ok(child.wait()?)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
