//! `fledge-manager`: the Fledge manager service (`serve`) and its command-line clients.
//!
//! # Layout
//! - `cli`: one module per subcommand; each parses nothing itself (clap does) and returns an
//!   [`cli::Exit`] code. This file only wires clap, logging and the exit code.
//! - `api`: the gRPC `ClusterService` (auth, operations, error mapping).
//! - `server`: TLS, health, reflection and the service stack.
//! - `crds`: the CustomResourceDefinitions and their installation.
//! - `ca`, `tls`: the manager's CA and the server's TLS material.
//! - `leader`: leader election over a Lease; only the leader runs `provision`.
//! - `provision`: the provisioning controller over WorkloadClusters (the phase list).

#![deny(clippy::unwrap_used, clippy::expect_used)]

mod agent_service;
mod api;
// Parts of the CA (reloading, the agent URI) are used by the AgentService, which a later
// issue registers.
#[allow(dead_code)]
mod ca;
mod cli;
mod crds;
mod leader;
mod pivot;
mod provision;
mod server;
mod tls;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_tracing();
    match cli::run(args) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("error: {err:#}");
            cli::Exit::Failure.into()
        }
    }
}

/// Logs go to stderr so that stdout stays machine-readable (`render`, `-o json`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
