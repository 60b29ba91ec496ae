//! `fledge-agent`: runs inside every workload cluster and keeps it at its spec, with or
//! without the manager.
//!
//! # Layout
//! - `config`: command line, environment, identity files.
//! - `stream`: the mTLS gRPC stream to the manager (`AgentService.Session`).
//! - `cache`: the desired state persisted in Secret `fledge-system/fledge-spec`.
//! - `reconciler`: the loop; `capi` (control plane, pools, health checks, templates) and
//!   `addons` (the add-on graph, inventories, health gates) do the work; `watch` triggers it.
//! - `status`: the report sent to the manager.
//! - `lease`: one active agent per cluster (Lease `fledge-system/fledge-agent`).
//! - `apply`, `backoff`, `netfile`: helpers.
//!
//! One small current-thread tokio runtime runs everything (the goal is ≤30 MiB RSS idle).

mod addons;
mod apply;
mod backoff;
mod cache;
mod capi;
mod config;
mod lease;
mod netfile;
mod reconciler;
mod status;
mod stream;
#[cfg(test)]
mod testdata;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use tracing::Instrument as _;

use crate::config::{Cli, Identity};
use crate::reconciler::{Desired, Shared};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEDGE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let identity = Identity {
        namespace: cli.cluster_namespace.clone(),
        name: cli.cluster_name.clone(),
    };
    let span = tracing::info_span!("agent", cluster = %identity.key());
    async move {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting");
        let client = kube::Client::try_default()
            .await
            .context("no Kubernetes client configuration (KUBECONFIG or in-cluster)")?;
        let desired = load_cache(&client, &identity).await;
        let shared = Arc::new(Shared::new(identity, desired));
        let holder = lease::identity();
        tokio::spawn(lease::run(client.clone(), holder.clone(), shared.clone()).in_current_span());
        watch::spawn(&client, &shared);
        tokio::spawn(
            reconciler::run(
                shared.clone(),
                client.clone(),
                Duration::from_secs(cli.resync_seconds.max(1)),
            )
            .in_current_span(),
        );
        let runner = stream::StreamRunner::new(
            shared,
            client.clone(),
            cli.identity_dir.clone(),
            cli.manager_endpoint.clone(),
            cli.network_file.clone(),
        );
        tokio::select! {
            () = runner.run() => {}
            () = shutdown() => {
                tracing::info!("shutting down");
                lease::release(client, &holder).await;
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// The cache as the reconciler's first desired state; the API is retried until it answers,
/// a corrupted or foreign cache is reported (Degraded) and left alone.
async fn load_cache(client: &kube::Client, identity: &Identity) -> Desired {
    let mut backoff = backoff::Backoff::default();
    loop {
        match cache::load(client, identity).await {
            Ok(Some(cached)) => {
                tracing::info!(
                    generation = cached.generation,
                    "reconciling from the cached spec"
                );
                return Desired {
                    spec: Some(cached),
                    error: None,
                };
            }
            Ok(None) => {
                tracing::info!("no cached spec yet; waiting for the manager");
                return Desired::default();
            }
            Err(cache::CacheError::Api(err)) => {
                tracing::warn!(error = %err, "reading the cache failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(err) => {
                tracing::error!(error = %err, "the cached spec is unusable; waiting for the manager to send a new one, nothing is changed meanwhile");
                return Desired {
                    spec: None,
                    error: Some(err.to_string()),
                };
            }
        }
    }
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
