//! `fledge-sim`: runs the simulated world.
//!
//! `fledge-sim serve` hosts the management cluster's API over HTTPS (see `--help`). Workload
//! clusters are hosted by the same process through `kube_sim::sim::Sim::add_cluster`.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use fledge_sim::clock::Speed;
use fledge_sim::faults::AdminServer;
use fledge_sim::world::{MANAGEMENT_CLUSTER, World, WorldConfig};
use tracing::{Instrument as _, info, info_span, warn};
use tracing_subscriber::EnvFilter;

/// How long shutting down may take before the process exits anyway.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The simulated world Fledge is tested against.
#[derive(Debug, Parser)]
#[command(name = "fledge-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the management cluster's Kubernetes API over HTTPS until SIGTERM or SIGINT.
    ///
    /// When the API is ready, `<state-dir>/kubeconfig` is written atomically (admin user with a
    /// bearer token, the cluster CA, `server: https://<listen address>`); it is removed again on
    /// shutdown, so its presence means "serving". The CA, its key and the admin token are kept in
    /// `<state-dir>/pki/` and reused on restart; the objects are held in memory only. Exits 0
    /// after a signal-initiated shutdown.
    ///
    /// The admin endpoint (fault knobs, see `fledge_sim::faults`) listens on `--admin-listen`;
    /// its address is written to `<state-dir>/admin-addr` and removed on shutdown.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (read it from the kubeconfig).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Directory for the kubeconfig and the persistent credentials (`pki/`); created if missing.
    #[arg(long)]
    state_dir: PathBuf,

    /// Run only the API server: no providers installed, no simulated Cluster API controllers,
    /// no workload clusters. What a real control plane always does (garbage collection,
    /// namespace deletion, ServiceAccount tokens) runs either way.
    #[arg(long)]
    no_controllers: bool,

    /// How much faster than real life the world runs: every simulated delay (VM clone, boot,
    /// pod start) is divided by this factor.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,

    /// The `fledge-agent` binary run for agent containers (default: `fledge-agent` next to
    /// `fledge-sim`).
    #[arg(long)]
    agent_bin: Option<PathBuf>,

    /// Past events per resource type a watch can resume from; older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 1000)]
    watch_history: usize,

    /// Where the admin endpoint (fault knobs, JSON over HTTP/1.1) listens; loopback only. Its
    /// address is written to `<state-dir>/admin-addr` once it accepts connections.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Logs usually go to a file in tests and CI; colour codes only help a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            serve(args)
                .instrument(info_span!("serve", cluster = MANAGEMENT_CLUSTER))
                .await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating the state directory {}", args.state_dir.display()))?;
    let kubeconfig_path = args.state_dir.join("kubeconfig");
    let admin_addr_path = args.state_dir.join("admin-addr");
    // A kubeconfig left by a previous run names a port that is no longer served.
    remove_if_present(&kubeconfig_path)?;
    remove_if_present(&admin_addr_path)?;
    // Handlers go in before the kubeconfig announces readiness, so an early SIGTERM is not fatal.
    let mut shutdown = ShutdownSignal::install().context("installing signal handlers")?;

    let agent_bin = match args.agent_bin {
        Some(path) => path,
        None => std::env::current_exe()
            .context("locating fledge-sim")?
            .with_file_name("fledge-agent"),
    };
    let config = WorldConfig {
        state_dir: args.state_dir.clone(),
        speed: Speed(args.speed),
        agent_bin,
        controllers: !args.no_controllers,
        listen: args.listen,
        watch_history: args.watch_history,
    };
    let world = World::start(config)
        .await
        .context("starting the management cluster")?;
    let admin = AdminServer::bind(world.clone(), args.admin_listen)
        .await
        .context("starting the admin endpoint")?;
    write_atomic(&admin_addr_path, &format!("{}\n", admin.local_addr()))?;
    let cluster = world.management().clone();
    cluster
        .admin_kubeconfig()
        .write_atomic(&kubeconfig_path)
        .context("writing the kubeconfig")?;
    info!(
        endpoint = %cluster.endpoint(),
        kubeconfig = %kubeconfig_path.display(),
        controllers = !args.no_controllers,
        admin = %admin.local_addr(),
        "Serving the management cluster"
    );

    let signal = shutdown.recv().await;
    info!(signal, "Shutting down");
    remove_if_present(&kubeconfig_path)?;
    remove_if_present(&admin_addr_path)?;
    admin.shutdown().await;
    if tokio::time::timeout(SHUTDOWN_DEADLINE, world.shutdown())
        .await
        .is_err()
    {
        warn!(deadline = ?SHUTDOWN_DEADLINE, "Shutdown did not finish in time, exiting anyway");
    }
    info!("Stopped");
    Ok(())
}

fn write_atomic(path: &Path, content: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}

/// SIGTERM and SIGINT.
struct ShutdownSignal {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for either signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
