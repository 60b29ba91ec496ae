//! The `fledge-manager` command line.
//!
//! Exit codes are a contract (see [`Exit`]): 0 success, 1 an operational failure (the cluster
//! failed, a timeout, an unreadable file), 2 bad input (the spec or the arguments; printed as
//! one `path: reason` line per problem on stderr), 3 the manager cannot be reached or refused
//! the credentials, 4 the named cluster or profile does not exist.

mod client;
mod cluster;
mod completion;
mod config;
mod crds;
mod embedded;
mod output;
mod profile;
mod render;
mod serve;
mod validate;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
                  in-cluster agent that keeps it at its spec, with or without the manager.",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "\
Getting started:
  fledge-manager serve --embedded              # a simulated world plus the API, one command
  fledge-manager login --server https://127.0.0.1:8443 \\
      --ca-file ~/.local/state/fledge/tls/ca.crt --token \"$(cat ~/.local/state/fledge/token)\"
  fledge-manager cluster create -f examples/edge-1.yaml --wait
  fledge-manager cluster list

Connection (client commands): --server, --ca-file, --token, else FLEDGE_SERVER,
FLEDGE_CA_FILE, FLEDGE_TOKEN, else the file `login` writes
($XDG_CONFIG_HOME/fledge/config.yaml, default ~/.config/fledge/config.yaml).

Exit codes:
  0  success
  1  failure: the operation or the cluster failed, or --wait timed out
  2  bad input: invalid spec or arguments (one `path: reason` line per problem)
  3  connection or authentication: manager unreachable, TLS mismatch, bad token
  4  not found: the named cluster or profile does not exist in your tenant";

/// Connection flags plus an output format.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    #[command(flatten)]
    connection: client::ConnectionArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 90s, 10m, 1h)"))
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Create the clusters of a file (and create or update its profiles first).
    ///
    /// Every ClusterProfile in the file is applied first (created, or updated when it
    /// differs), then every WorkloadCluster is created. Creating the same cluster again with
    /// the same spec succeeds; a different spec is refused (use scale/upgrade). The namespace
    /// in the file is ignored: clusters live in your token's tenant.
    ///
    /// With --wait, follows each cluster phase by phase until it is Ready: a spinner with the
    /// elapsed time on a terminal, `[  12.3s] Phase: message` lines otherwise. Exits 1 with
    /// the reason when the cluster becomes Invalid or Failed, stays Degraded, or --timeout
    /// passes.
    ///
    /// Examples:
    ///   fledge-manager cluster create -f examples/edge-1.yaml
    ///   fledge-manager cluster create -f examples/edge-1.yaml --wait --timeout 20m
    #[command(verbatim_doc_comment)]
    Create {
        /// The spec file (YAML, several documents allowed); `-` reads standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Wait until every cluster is Ready.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show one cluster.
    ///
    /// Examples:
    ///   fledge-manager cluster get edge-1
    ///   fledge-manager cluster get edge-1 -o yaml
    #[command(verbatim_doc_comment)]
    Get {
        /// The cluster's name.
        name: String,
        /// Output format: table, wide (adds STEP and AGENT), json or yaml (the stored
        /// WorkloadCluster object with its status).
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: output::Format,
    },
    /// List the clusters of your tenant.
    ///
    /// Columns: NAME PHASE PROGRESS VERSION CP (ready/desired control-plane machines)
    /// WORKERS (ready/desired worker machines) AGE; -o wide adds STEP (what the current
    /// phase waits for) and AGENT (whether the in-cluster agent is connected).
    ///
    /// Examples:
    ///   fledge-manager cluster list
    ///   fledge-manager cluster list -o json | jq '.items[].status.phase'
    #[command(verbatim_doc_comment)]
    List {
        /// Output format: table, wide, json or yaml.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: output::Format,
    },
    /// Follow a cluster: one line per change of its state, until it is deleted (or Ctrl-C).
    ///
    /// Examples:
    ///   fledge-manager cluster watch edge-1
    ///   fledge-manager cluster watch edge-1 -o json | jq -c '.status.phase'
    #[command(verbatim_doc_comment)]
    Watch {
        /// The cluster's name.
        name: String,
        /// Output format: table, wide, json (one object per line) or yaml.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: output::Format,
    },
    /// Change the number of control-plane machines or of a pool's workers.
    ///
    /// The control plane takes 1, 3, 5 or 7 machines. The change is applied by the agent in
    /// the cluster; follow it with `cluster watch`.
    ///
    /// Examples:
    ///   fledge-manager cluster scale edge-1 --control-plane 5
    ///   fledge-manager cluster scale edge-1 --pool general --replicas 5
    #[command(verbatim_doc_comment)]
    #[command(group(clap::ArgGroup::new("what").required(true).args(["control_plane", "pool"])))]
    Scale {
        /// The cluster's name.
        name: String,
        /// Control-plane machines.
        #[arg(long, value_name = "N", conflicts_with = "pool")]
        control_plane: Option<i32>,
        /// The worker pool to scale (needs --replicas).
        #[arg(long, value_name = "POOL", requires = "replicas")]
        pool: Option<String>,
        /// Machines of the pool.
        #[arg(long, value_name = "N", requires = "pool")]
        replicas: Option<i32>,
    },
    /// Upgrade Kubernetes or the VM template (OS image) of the control plane or a pool.
    ///
    /// --kubernetes-version upgrades the whole cluster, one minor version at a time: the
    /// control plane first, then the pools. --template replaces the machines of the control
    /// plane (or, with --pool, of that pool) with clones of a new VM template. Both may be
    /// given together, as a template usually carries one Kubernetes version.
    ///
    /// Examples:
    ///   fledge-manager cluster upgrade edge-1 --kubernetes-version v1.33.1
    ///   fledge-manager cluster upgrade edge-1 --template ubuntu-2404-kube-v1.32.4-p1
    ///   fledge-manager cluster upgrade edge-1 --template ubuntu-2404-kube-v1.32.4-p1 --pool batch
    #[command(verbatim_doc_comment)]
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["kubernetes_version", "template"])))]
    Upgrade {
        /// The cluster's name.
        name: String,
        /// The Kubernetes version to run, vX.Y.Z.
        #[arg(long, value_name = "VERSION")]
        kubernetes_version: Option<String>,
        /// The VM template to clone machines from.
        #[arg(long, value_name = "IMAGE")]
        template: Option<String>,
        /// Apply --template to this worker pool instead of the control plane.
        #[arg(long, value_name = "POOL", requires = "template")]
        pool: Option<String>,
    },
    /// Renew the cluster's certificates by replacing every machine created before now.
    ///
    /// Sets spec.certificates.rotateAfter to the current time; control-plane machines roll
    /// first, then workers.
    ///
    /// Example:
    ///   fledge-manager cluster rotate-certs edge-1
    #[command(verbatim_doc_comment)]
    RotateCerts {
        /// The cluster's name.
        name: String,
    },
    /// Delete a cluster: its Cluster API objects move back to the management cluster, then
    /// its machines are deleted.
    ///
    /// Examples:
    ///   fledge-manager cluster delete edge-1
    ///   fledge-manager cluster delete edge-1 --wait --timeout 15m
    #[command(verbatim_doc_comment)]
    Delete {
        /// The cluster's name.
        name: String,
        /// Wait until the cluster is gone.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Print an admin kubeconfig of the cluster (treat it as a secret).
    ///
    /// Examples:
    ///   fledge-manager cluster kubeconfig edge-1 > edge-1.kubeconfig
    ///   fledge-manager cluster kubeconfig edge-1 --write edge-1.kubeconfig
    ///   kubectl --kubeconfig edge-1.kubeconfig get nodes
    #[command(verbatim_doc_comment)]
    Kubeconfig {
        /// The cluster's name.
        name: String,
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        write: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// Create or update the ClusterProfiles of a file; clusters using a profile get the change.
    ///
    /// Example:
    ///   fledge-manager profile apply -f examples/edge-1.yaml
    #[command(verbatim_doc_comment)]
    Apply {
        /// The spec file; `-` reads standard input. WorkloadClusters in it are skipped.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
    },
    /// Show one profile.
    ///
    /// Example:
    ///   fledge-manager profile get standard -o yaml
    #[command(verbatim_doc_comment)]
    Get {
        /// The profile's name.
        name: String,
        /// Output format: table, json or yaml.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: output::Format,
    },
    /// List the profiles of your tenant.
    ///
    /// Example:
    ///   fledge-manager profile list
    #[command(verbatim_doc_comment)]
    List {
        /// Output format: table, json or yaml.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: output::Format,
    },
    /// Delete a profile; refused (exit 1) while a cluster uses it.
    ///
    /// Example:
    ///   fledge-manager profile delete standard
    #[command(verbatim_doc_comment)]
    Delete {
        /// The profile's name.
        name: String,
    },
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
    /// Manage workload clusters through a manager (create, get, list, watch, scale, upgrade,
    /// rotate-certs, delete, kubeconfig).
    #[command(after_long_help = AFTER_HELP)]
    Cluster {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Manage cluster profiles (add-ons) through a manager (apply, get, list, delete).
    #[command(after_long_help = AFTER_HELP)]
    Profile {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Check the connection settings against a manager and save them for later commands.
    ///
    /// Writes --server, --ca-file (as an absolute path) and --token to
    /// $XDG_CONFIG_HOME/fledge/config.yaml (default ~/.config/fledge/config.yaml) with mode
    /// 0600. Flags and FLEDGE_* variables still override the file.
    ///
    /// Example:
    ///   fledge-manager login --server https://127.0.0.1:8443 --ca-file tls/ca.crt --token "$TOKEN"
    #[command(verbatim_doc_comment)]
    Login {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell completion script.
    ///
    /// Examples:
    ///   source <(fledge-manager completion bash)
    ///   fledge-manager completion zsh > "${fpath[1]}/_fledge-manager"
    ///   fledge-manager completion fish > ~/.config/fish/completions/fledge-manager.fish
    #[command(verbatim_doc_comment)]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Serve the gRPC API (ClusterService, health, reflection) over TLS.
    ///
    /// State lives in the management cluster as WorkloadCluster and ClusterProfile objects;
    /// the CRDs are installed or updated on start unless --skip-crd-install. The replica
    /// holding the Lease `<namespace>/fledge-manager` also runs the provisioning controller
    /// (unless --no-provisioning).
    ///
    /// With --embedded, everything comes from one state directory instead: a simulated world
    /// (`fledge-sim`, started as its own process, or reused when it already serves that
    /// directory), a self-signed CA and a generated token (tenant team-a); the paths are
    /// printed on start.
    ///
    /// Examples:
    ///   fledge-manager serve --kubeconfig mgmt.kubeconfig --tls-dir tls --tokens tokens.txt
    ///   fledge-manager serve --embedded
    Serve {
        /// Kubeconfig of the management cluster. Without it (and without KUBECONFIG) the
        /// manager infers its configuration: `~/.kube/config`, else the Pod's ServiceAccount.
        #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Address to listen on (port 0 picks one; the chosen address is printed on stdout).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Server certificate (PEM); needs --tls-key. With --tls-dir too, the directory's CA
        /// still issues and verifies agent certificates.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Server private key (PEM); needs --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Directory holding a self-signed CA and server certificate, created on first use
        /// (ca.crt, ca.key, server.crt, server.key).
        #[arg(long, value_name = "DIR", required_unless_present_any = ["tls_cert", "embedded"])]
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
        /// Secret in the management cluster with more bearer tokens (key `tokens`, the
        /// --tokens file format), reloaded whenever it changes.
        #[arg(long, value_name = "NAMESPACE/NAME")]
        tokens_secret: Option<crate::server::TokensSecret>,
        /// Validity of the agent certificates the AgentService renews (e.g. `90d`).
        #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = humantime::parse_duration)]
        agent_cert_validity: std::time::Duration,
        /// Renew an agent's certificate when it expires within this (default: the last third
        /// of its validity).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        agent_cert_renew_before: Option<std::time::Duration>,
        /// Try-it-out mode: start (or reuse) a simulated world and generate TLS and a token in
        /// --state-dir.
        #[arg(long, conflicts_with_all = ["tls_cert", "tls_dir", "tokens"])]
        embedded: bool,
        /// State directory of --embedded [default: $XDG_STATE_HOME/fledge, else
        /// ~/.local/state/fledge].
        #[arg(long, value_name = "DIR", requires = "embedded")]
        state_dir: Option<PathBuf>,
        /// Clock speed of the simulated world --embedded starts (every simulated delay is
        /// divided by it).
        #[arg(
            long,
            value_name = "FACTOR",
            default_value_t = 10.0,
            requires = "embedded"
        )]
        sim_speed: f64,
    },
}

/// Process exit codes of the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success = 0,
    /// An operational failure: the operation or the cluster failed, a `--wait` timed out, a
    /// file is unreadable.
    Failure = 1,
    /// Bad input: an invalid spec or arguments.
    BadInput = 2,
    /// The manager cannot be reached, its certificate does not match, or it refused the token.
    Connection = 3,
    /// The named object does not exist in the caller's tenant.
    NotFound = 4,
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
            tokens_secret,
            agent_cert_validity,
            agent_cert_renew_before,
            embedded,
            state_dir,
            sim_speed,
        } => {
            let mut options = serve::Options {
                kubeconfig,
                listen,
                tls_files: tls_cert.zip(tls_key),
                tls_dir,
                tokens,
                skip_crd_install,
                provisioning: !no_provisioning,
                namespace,
                agent_endpoint,
                tokens_secret,
                agent_cert_validity,
                agent_cert_renew_before,
            };
            if embedded {
                embedded::prepare(&mut options, state_dir, sim_speed)?;
            }
            serve::run(options)
        }
        Command::Completion { shell } => {
            completion::run(shell);
            Ok(Exit::Success)
        }
        Command::Cluster { client, command } => run_client(cluster_command(client, command)),
        Command::Profile { client, command } => run_client(profile_command(client, command)),
        Command::Login { client } => {
            run_client(async move { config::login(&client.connection).await })
        }
    }
}

/// Runs a client command on a small runtime; a [`client::CliError`] is printed here (its
/// lines on stderr) and becomes the exit code.
fn run_client(
    command: impl Future<Output = Result<Exit, client::CliError>>,
) -> anyhow::Result<Exit> {
    use anyhow::Context;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(command) {
        Ok(exit) => Ok(exit),
        Err(err) => {
            eprintln!("error: {}", err.message);
            Ok(err.exit)
        }
    }
}

async fn connect(args: &ClientArgs) -> Result<client::Client, client::CliError> {
    client::Connection::resolve(&args.connection)?
        .connect()
        .await
}

async fn cluster_command(
    args: ClientArgs,
    command: ClusterCommand,
) -> Result<Exit, client::CliError> {
    let client = connect(&args).await?;
    match command {
        ClusterCommand::Create {
            file,
            wait,
            timeout,
        } => cluster::create(&client, &file, wait.then_some(timeout)).await,
        ClusterCommand::Get { name, output } => cluster::get(&client, &name, output).await,
        ClusterCommand::List { output } => cluster::list(&client, output).await,
        ClusterCommand::Watch { name, output } => cluster::watch(&client, &name, output).await,
        ClusterCommand::Scale {
            name,
            control_plane,
            pool,
            replicas,
        } => cluster::scale(&client, &name, control_plane, pool.as_deref(), replicas).await,
        ClusterCommand::Upgrade {
            name,
            kubernetes_version,
            template,
            pool,
        } => {
            cluster::upgrade(
                &client,
                &name,
                kubernetes_version.as_deref(),
                template.as_deref(),
                pool.as_deref(),
            )
            .await
        }
        ClusterCommand::RotateCerts { name } => cluster::rotate_certs(&client, &name).await,
        ClusterCommand::Delete {
            name,
            wait,
            timeout,
        } => cluster::delete(&client, &name, wait.then_some(timeout)).await,
        ClusterCommand::Kubeconfig { name, write } => {
            cluster::kubeconfig(&client, &name, write.as_deref()).await
        }
    }
}

async fn profile_command(
    args: ClientArgs,
    command: ProfileCommand,
) -> Result<Exit, client::CliError> {
    let client = connect(&args).await?;
    match command {
        ProfileCommand::Apply { file } => profile::apply(&client, &file).await,
        ProfileCommand::Get { name, output } => profile::get(&client, &name, output).await,
        ProfileCommand::List { output } => profile::list(&client, output).await,
        ProfileCommand::Delete { name } => profile::delete(&client, &name).await,
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
