//! `fledge-manager serve`: load everything, install the CRDs, bind, serve until a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::Exit;
use crate::api::auth::Tokens;
use crate::{crds, server, tls};

/// Deadline of each call the API makes to the management cluster.
const KUBE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the CRDs may take to become Established on start.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `serve`, as parsed by clap.
#[derive(Debug)]
pub struct Options {
    /// Kubeconfig of the management cluster.
    pub kubeconfig: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Server certificate and key files.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Directory of the self-managed CA and server certificate.
    pub tls_dir: Option<PathBuf>,
    /// Tokens file.
    pub tokens: Option<PathBuf>,
    /// Leave the CRDs to an admin.
    pub skip_crd_install: bool,
}

/// Runs the server; returns when SIGTERM or SIGINT arrives and calls have drained.
pub fn run(options: Options) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(options))
}

async fn kube_client(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

async fn serve(options: Options) -> anyhow::Result<Exit> {
    // Load every input before binding a port, so bad configuration fails fast.
    let tls = match (&options.tls_files, &options.tls_dir) {
        (Some((cert, key)), None) => tls::load_files(cert, key)?,
        (None, Some(dir)) => tls::ensure_dir(dir)?,
        _ => anyhow::bail!("give either --tls-cert and --tls-key, or --tls-dir"),
    };
    let tokens = match &options.tokens {
        Some(path) => Tokens::load(path)?,
        None => {
            tracing::warn!("No --tokens file: every ClusterService call is UNAUTHENTICATED");
            Tokens::default()
        }
    };
    if let Some(ca) = &tls.ca {
        tracing::info!(
            ca_bytes = ca.cert_pem().len(),
            "Using the manager CA for the server certificate"
        );
    }
    let client = kube_client(&options.kubeconfig).await?;
    if options.skip_crd_install {
        tracing::info!("Skipping CRD installation (--skip-crd-install)");
    } else {
        crds::install(&client, CRD_ESTABLISH_TIMEOUT).await?;
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {}", options.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, tokens = tokens.len(), "Serving gRPC");
    // One line on stdout with the bound address: `--listen 127.0.0.1:0` callers read it.
    println!("listening on {addr}");
    server::serve(
        listener,
        &tls,
        tokens,
        client,
        KUBE_CALL_TIMEOUT,
        shutdown_signal(),
    )
    .await?;
    tracing::info!("Stopped");
    Ok(Exit::Success)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                tokio::select! {
                    _ = sigterm.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "Cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("Shutting down");
}
