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
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPKEEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(without_request_bodies(filter))
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

/// The Docker client and its HTTP stack log request bodies at debug level,
/// and those hold secrets (`PGPASSWORD` in an exec's environment): they are
/// held at info whatever -v or UPKEEP_LOG asks for.
fn without_request_bodies(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    [
        "bollard",
        "hyper",
        "hyper_util",
        "h2",
        "ureq",
        "ureq_proto",
        "rustls",
    ]
    .iter()
    .fold(filter, |f, krate| {
        f.add_directive(format!("{krate}=info").parse().expect("a valid directive"))
    })
}
