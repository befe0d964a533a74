//! The `colony` command: run a node, query one, or watch a demo cluster.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let result = runtime.block_on(cli::run(args));
    // The node has left by now; lingering connections (an admin client's keep-alive) must not
    // delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("colony: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
