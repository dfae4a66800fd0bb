//! Writes the fuzz targets' seed corpora (`meshward_node::fuzzing::seeds`) as DIR/TARGET/seed-N,
//! creating the directories; `.ci/fuzz` passes DIR/TARGET to each run as a second corpus.
//!
//! ```sh
//! cargo run -q -p meshward-node --features fuzzing --example fuzz_seeds -- DIR
//! ```

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: fuzz_seeds DIR (writes DIR/TARGET/seed-N for every fuzz target)");
        return ExitCode::from(2);
    };
    match write(Path::new(dir)) {
        Ok(written) => {
            println!(
                "{written} fuzz seeds written under {}",
                Path::new(dir).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fuzz_seeds: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: &Path) -> anyhow::Result<usize> {
    let mut written = 0;
    for (target, seeds) in meshward_node::fuzzing::seeds() {
        let sub = dir.join(target);
        std::fs::create_dir_all(&sub)
            .with_context(|| format!("cannot create the seed directory {}", sub.display()))?;
        for (n, seed) in seeds.iter().enumerate() {
            let path = sub.join(format!("seed-{n}"));
            std::fs::write(&path, seed)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written += 1;
        }
    }
    Ok(written)
}
