//! The `fledge-manager` command line.
//!
//! Exit codes are a contract: 0 success, 1 an operational failure (unreadable file, server
//! unreachable), 2 bad input (the spec or the arguments), printed as one `path: reason` line per
//! problem on stderr.

mod crds;
mod render;
mod serve;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fledge_core::validate::FieldError;

/// Command line of `fledge-manager`.
#[derive(Debug, Parser)]
#[command(
    name = "fledge-manager",
    version,
    about = "Fledge: provisions self-managing Kubernetes clusters through Cluster API",
    long_about = "Fledge provisions Kubernetes workload clusters through Cluster API, pivots each \
                  cluster's Cluster API objects into the cluster itself, and hands it to an \
                  in-cluster agent that keeps it at its spec, with or without the manager.\n\n\
                  Offline commands:\n  validate   Check a spec file\n  render     Print the \
                  Cluster API objects of a spec file\n  crds       Print the CustomResourceDefinitions\n\n\
                  Service:\n  serve      Serve the gRPC API in front of a management cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a WorkloadCluster/ClusterProfile file and report every problem with its field path.
    ///
    /// Exit code 0 and one OK line when the file is valid; exit code 2 and one
    /// `path: reason` line per problem on stderr when it is not.
    ///
    /// Example:
    ///   fledge-manager validate -f examples/edge-1.yaml
    Validate {
        /// The spec file (YAML, several documents allowed); `-` reads standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the Cluster API objects that a spec file renders to.
    ///
    /// `--phase bootstrap` is what the manager creates in the management cluster to get the
    /// first control-plane node; `--phase full` is the end state the agent keeps in the
    /// workload cluster.
    ///
    /// Examples:
    ///   fledge-manager render -f examples/edge-1.yaml
    ///   fledge-manager render -f examples/edge-1.yaml --phase full -o json
    Render {
        /// The spec file (YAML, several documents allowed); `-` reads standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Which objects to render.
        #[arg(long, default_value = "bootstrap", value_parser = ["bootstrap", "full"])]
        phase: String,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "yaml", value_parser = ["yaml", "json"])]
        output: String,
    },
    /// Print the CustomResourceDefinitions of WorkloadCluster and ClusterProfile.
    ///
    /// Examples:
    ///   fledge-manager crds | kubectl apply --server-side -f -
    ///   fledge-manager crds --output-dir deploy/crds
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Serve the gRPC API (ClusterService, health, reflection) over TLS.
    ///
    /// State lives in the management cluster as WorkloadCluster and ClusterProfile objects;
    /// the CRDs are installed or updated on start unless --skip-crd-install. The replica
    /// holding the Lease `<namespace>/fledge-manager` also runs the provisioning controller
    /// (unless --no-provisioning).
    ///
    /// Example:
    ///   fledge-manager serve --kubeconfig mgmt.kubeconfig --tls-dir tls --tokens tokens.txt
    Serve {
        /// Kubeconfig of the management cluster. Without it (and without KUBECONFIG) the
        /// manager infers its configuration: `~/.kube/config`, else the Pod's ServiceAccount.
        #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Address to listen on (port 0 picks one; the chosen address is printed on stdout).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Server certificate (PEM); needs --tls-key.
        #[arg(
            long,
            value_name = "FILE",
            requires = "tls_key",
            conflicts_with = "tls_dir"
        )]
        tls_cert: Option<PathBuf>,
        /// Server private key (PEM); needs --tls-cert.
        #[arg(
            long,
            value_name = "FILE",
            requires = "tls_cert",
            conflicts_with = "tls_dir"
        )]
        tls_key: Option<PathBuf>,
        /// Directory holding a self-signed CA and server certificate, created on first use
        /// (ca.crt, ca.key, server.crt, server.key).
        #[arg(long, value_name = "DIR", required_unless_present = "tls_cert")]
        tls_dir: Option<PathBuf>,
        /// Bearer tokens: one `TOKEN TENANT` pair per line, `#` comments.
        #[arg(long, value_name = "FILE")]
        tokens: Option<PathBuf>,
        /// Do not install or update the CRDs (an admin manages them).
        #[arg(long)]
        skip_crd_install: bool,
        /// Serve the API only; never run the provisioning controller (other replicas do).
        #[arg(long)]
        no_provisioning: bool,
        /// Namespace of the leader-election Lease `fledge-manager`.
        #[arg(
            long,
            value_name = "NAMESPACE",
            env = "POD_NAMESPACE",
            default_value = "fledge-system"
        )]
        namespace: String,
        /// URL agents dial to reach this manager (default: https:// and the bound address).
        #[arg(long, value_name = "URL")]
        agent_endpoint: Option<String>,
    },
}

/// Process exit codes of the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success = 0,
    /// An operational failure: unreadable file, unreachable server.
    Failure = 1,
    /// Bad input: an invalid spec or arguments.
    BadInput = 2,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Validate { file } => validate::run(&file),
        Command::Render {
            file,
            phase,
            output,
        } => render::run(&file, &phase, &output),
        Command::Crds { output_dir } => crds::run(output_dir.as_deref()),
        Command::Serve {
            kubeconfig,
            listen,
            tls_cert,
            tls_key,
            tls_dir,
            tokens,
            skip_crd_install,
            no_provisioning,
            namespace,
            agent_endpoint,
        } => serve::run(serve::Options {
            kubeconfig,
            listen,
            tls_files: tls_cert.zip(tls_key),
            tls_dir,
            tokens,
            skip_crd_install,
            provisioning: !no_provisioning,
            namespace,
            agent_endpoint,
        }),
    }
}

/// Reads a spec file, or standard input for `-`.
fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Read;
    if path.as_os_str() == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("cannot read standard input")?;
        return Ok(buf);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Prints one `path: reason` line per problem on stderr.
fn report_field_errors(errors: &[FieldError]) {
    for error in errors {
        eprintln!("{error}");
    }
}
