//! Ingests standard input into a repository as one stream of one new snapshot,
//! through the `upkeep::repo` API; prints nothing but errors. Used by the
//! benchmark harness (`bench/bench.sh repo`) to time the repository layer alone.
//!
//! ```sh
//! UPKEEP_PASSWORD_FILE=pw cargo run --release --example ingest -- REPO [STREAM_NAME] < data
//! ```
//!
//! `REPO` is any location `RepoLocation::parse` accepts (a folder, `s3:...`); the
//! repository is created when missing. The password is read from the file named by
//! `UPKEEP_PASSWORD_FILE` (its first line), never from the command line.

use std::process::ExitCode;

use upkeep::repo::{RepoLocation, Repository, SnapshotMeta};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ingest REPO [STREAM_NAME] < data  (password file in UPKEEP_PASSWORD_FILE)";
    let repo = args.next().ok_or(usage)?;
    let name = args.next().unwrap_or_else(|| "stdin".to_string());
    let pw_file = std::env::var_os("UPKEEP_PASSWORD_FILE").ok_or(usage)?;
    let pw = std::fs::read_to_string(&pw_file)
        .map_err(|e| format!("reading password file {}: {e}", pw_file.to_string_lossy()))?;
    let pw = pw.lines().next().unwrap_or("");

    let repo = Repository::open_or_init(&RepoLocation::parse(&repo)?, pw)?;
    let w = repo.begin_snapshot(SnapshotMeta {
        tags: vec!["bench".into()],
        ..Default::default()
    })?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    w.add_stream(&name, &mut input)?;
    w.commit()?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest: {e}");
            ExitCode::FAILURE
        }
    }
}
