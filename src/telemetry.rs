//! Logging: `tracing` to stderr, plain or JSON, filtered by `RUST_LOG` (default `info`).
//! kube logs whole response bodies (a Secret's `data` included): its client at WARN when it
//! cannot decode one and at DEBUG for an error answer, its watcher at DEBUG for every error.
//! Those modules are held above those levels whatever `RUST_LOG` says.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The directives that keep kube's body-quoting lines out of the logs.
pub(crate) const QUIET_BODIES: [&str; 2] =
    ["kube_client::client=error", "kube_runtime::watcher=info"];

/// Log line format.
#[expect(missing_docs, reason = "a variant's doc comment would change `--help`")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    // Plain lines, or one JSON object per line. Not doc comments: clap would print them as
    // per-value help and turn every `--help` into its long form.
    Plain,
    Json,
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = QUIET_BODIES.iter().fold(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        |filter, directive| filter.add_directive(directive.parse().expect("a valid directive")),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
