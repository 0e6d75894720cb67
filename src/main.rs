//! The `keymount` binary: parse the command line, run the chosen role, map the result to an
//! exit code.

use clap::Parser;
use keymount::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads() {
        runtime.worker_threads(threads);
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("keymount: start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    keymount::telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Node(args) => keymount::cmd::node::run(*args).await,
        Command::Controller(args) => keymount::cmd::controller::run(*args).await,
        Command::Csi(args) => keymount::cmd::csi_client::run(*args).await,
        Command::Fetch(args) => keymount::cmd::fetch::run(*args).await,
        Command::Crd(args) => keymount::cmd::crd::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Each cause once: errors that show their source in their message also return it.
            let message = keymount::text::error_chain(error.as_ref());
            tracing::error!("{message}");
            eprintln!("keymount: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
