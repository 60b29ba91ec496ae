//! `fledge-manager serve`: load everything, install the CRDs, bind, serve until a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use fledge_core::names;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Exit;
use crate::api::auth::Tokens;
use crate::{crds, leader, provision, server, tls};

/// Deadline of each call the API makes to the management cluster.
const KUBE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the CRDs may take to become Established on start.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Options of `serve`, as parsed by clap.
#[derive(Debug)]
pub struct Options {
    /// Kubeconfig of the management cluster; `None` infers it (in-cluster in a Pod).
    pub kubeconfig: Option<PathBuf>,
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
    /// Run the provisioning controller while this replica holds the Lease.
    pub provisioning: bool,
    /// Namespace of the leader-election Lease.
    pub namespace: String,
    /// URL agents dial; default `https://<bound address>`.
    pub agent_endpoint: Option<String>,
    /// Secret (`NAMESPACE/NAME`, key `tokens`) with more bearer tokens, reloaded on change.
    pub tokens_secret: Option<server::TokensSecret>,
    /// Validity of agent certificates the AgentService renews.
    pub agent_cert_validity: Duration,
    /// Renew an agent's certificate when it expires within this (default: last third).
    pub agent_cert_renew_before: Option<Duration>,
}

/// Runs the server; returns when SIGTERM or SIGINT arrives and calls have drained.
pub fn run(options: Options) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(options))
}

async fn kube_client(path: Option<&Path>) -> anyhow::Result<kube::Client> {
    let Some(path) = path else {
        // In a Pod: the ServiceAccount token and the cluster CA (kube's in-cluster config).
        let config = kube::Config::infer()
            .await
            .context("no --kubeconfig: inferring the Kubernetes configuration")?;
        return kube::Client::try_from(config).context("building the Kubernetes client");
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

async fn serve(options: Options) -> anyhow::Result<Exit> {
    // Load every input before binding a port, so bad configuration fails fast.
    let tls = tls::load(
        options
            .tls_files
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path())),
        options.tls_dir.as_deref(),
    )?;
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
    let client = kube_client(options.kubeconfig.as_deref()).await?;
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if options.provisioning {
        ensure_namespace(&client, &options.namespace).await;
        let ctx = Arc::new(provision::Context {
            client: client.clone(),
            ca: tls.ca.clone(),
            agent_endpoint: options
                .agent_endpoint
                .clone()
                .unwrap_or_else(|| format!("https://{addr}")),
            call_timeout: KUBE_CALL_TIMEOUT,
        });
        let (leading_tx, leading_rx) = watch::channel(false);
        let config = leader::LeaderConfig::new(&options.namespace, names::MANAGER_LEASE);
        tracing::info!(identity = %config.identity, lease = %format!("{}/{}", config.namespace, config.name), "Campaigning for leadership");
        tasks.spawn(leader::run(
            client.clone(),
            config,
            leading_tx,
            until(stop_rx.clone(), true),
        ));
        tasks.spawn(provision_while_leading(ctx, leading_rx, stop_rx.clone()));
    }
    let result = server::serve(
        listener,
        &tls,
        client,
        server::ServeOptions {
            tokens,
            tokens_secret: options.tokens_secret.clone(),
            agent: crate::agent_service::Config {
                cert_validity: options.agent_cert_validity,
                cert_renew_before: options.agent_cert_renew_before,
                replica: leader::process_identity(),
                call_timeout: KUBE_CALL_TIMEOUT,
                heartbeat_interval: crate::agent_service::HEARTBEAT_INTERVAL,
            },
            call_timeout: KUBE_CALL_TIMEOUT,
        },
        async move {
            shutdown_signal().await;
        },
    )
    .await;
    stop_tx.send_replace(true);
    let drained = tokio::time::timeout(server::DRAIN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("Background tasks did not stop within the drain grace period");
    }
    result?;
    tracing::info!("Stopped");
    Ok(Exit::Success)
}

/// Completes when `rx` holds `want` (or its sender is gone).
async fn until(mut rx: watch::Receiver<bool>, want: bool) {
    let _ = rx.wait_for(|value| *value == want).await;
}

/// Runs the provisioning controller whenever this replica leads, and stops it as soon as
/// leadership is lost or the process shuts down.
async fn provision_while_leading(
    ctx: Arc<provision::Context>,
    leading: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = until(leading.clone(), true) => {}
            () = until(stop.clone(), true) => return,
        }
        if *stop.borrow() {
            return;
        }
        tracing::info!("Starting the provisioning controller");
        let lost = until(leading.clone(), false);
        let stopped = until(stop.clone(), true);
        provision::run(ctx.clone(), async move {
            tokio::select! {
                () = lost => {}
                () = stopped => {}
            }
        })
        .await;
        tracing::info!("Stopped the provisioning controller");
    }
}

/// Creates the Lease's namespace if it is missing; in a real deployment it is the manager's
/// own namespace and exists, so a failure (no RBAC for namespaces) is only logged.
async fn ensure_namespace(client: &kube::Client, namespace: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            let ns = Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some(namespace.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            if let Err(err) = api.create(&Default::default(), &ns).await
                && !leader::is_status(&err, 409)
            {
                tracing::warn!(%err, namespace, "Cannot create the Lease namespace");
            }
        }
        Err(err) => tracing::warn!(%err, namespace, "Cannot read the Lease namespace"),
    }
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
