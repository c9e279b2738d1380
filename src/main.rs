//! The `upkeep` binary: parse arguments, run, print errors. All work is in
//! the library.

use clap::Parser;

fn main() {
    let cli = upkeep::cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UPKEEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match upkeep::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            upkeep::cli::exit_code(&err)
        }
    };
    std::process::exit(code);
}
