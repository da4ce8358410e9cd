//! gregor: a Kafka-protocol message broker in one binary.
//!
//! `gregor serve` runs one broker, which is also one voter of the metadata quorum.
//! `gregor admin` manages the metadata quorum through a broker's admin HTTP API.

use gregor::admin::cli as admin_cli;
use gregor::{config, serve};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gregor", version, about = "A Kafka-protocol message broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Serve(config::Flags),
    /// Manage the metadata quorum (status, add-learner, promote, remove) through a broker's
    /// admin HTTP API.
    Admin(admin_cli::AdminArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(args) => admin_cli::run(&args),
        Command::Serve(flags) => {
            let config = match config::Config::load(&flags) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("gregor: invalid configuration: {e:#}");
                    return std::process::ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("gregor: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            // The OTLP exporters' connections run on the runtime.
            let telemetry = {
                let _entered = runtime.enter();
                serve::telemetry::init(config.log_format, &config.log_level, config.node_id)
            };
            let telemetry = match telemetry {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("gregor: invalid OpenTelemetry settings: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let result = runtime.block_on(serve::run(config));
            {
                let _entered = runtime.enter();
                telemetry.shutdown();
            }
            match result {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "gregor stopped with an error");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
