//! `fledge-agent`: runs inside every workload cluster and keeps it at its spec.
//!
//! This binary is a skeleton until the agent issue lands: it parses its
//! command line and prints its version.

use clap::Parser;

/// Command line of the agent.
#[derive(Debug, Parser)]
#[command(
    name = "fledge-agent",
    version,
    about = "Keeps a workload cluster at its Fledge spec"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("fledge-agent: the reconciling agent is not built yet; only --version works")
}
