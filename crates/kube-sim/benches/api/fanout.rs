//! Watch fan-out: 1,000 kube-rs watches (each its own HTTPS connection: kube-rs speaks
//! HTTP/1.1 only), one create at a time; the latency of a watcher is the time from the start of
//! the create request to the watcher holding the decoded event. The same is measured with
//! in-process watch streams, to separate the server's fan-out from HTTP, TLS and decoding.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube_sim::api_server::WatchOptions;
use kube_sim::sim::{ClusterOptions, Sim};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::report::{Figure, Report, ratio, thousands};
use crate::throughput::{config_map, create_namespace};
use crate::{NAMESPACE, Scale, client_from_kubeconfig, ms, quantile};

/// How long opening the watchers or delivering one write may take before the run fails.
const DEADLINE: Duration = Duration::from_secs(120);

/// Kubernetes' API call latency SLO (sig-scalability): p99 of single-object mutating calls
/// ≤ 1 s. Upstream has no watch-latency SLO yet; this is the bar we hold delivery to.
const SLO: Duration = Duration::from_secs(1);

/// The round a probe object belongs to (`probe-<round>`).
fn round_of(name: Option<&str>) -> Option<usize> {
    name?.strip_prefix("probe-")?.parse().ok()
}

/// Delivery latencies of all rounds, sorted.
struct Latencies(Vec<Duration>);

impl Latencies {
    fn display(&self) -> String {
        format!(
            "p50 {}, p99 {}, max {}",
            ms(quantile(&self.0, 0.5)),
            ms(quantile(&self.0, 0.99)),
            ms(self.0.last().copied().unwrap_or_default())
        )
    }

    fn p99(&self) -> Duration {
        quantile(&self.0, 0.99)
    }
}

/// Waits for every watcher's report of `round`; returns each one's latency from `sent`.
async fn collect_round(
    rx: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    round: usize,
    watchers: usize,
    sent: Instant,
    out: &mut Vec<Duration>,
) -> anyhow::Result<()> {
    let mut seen = 0;
    while seen < watchers {
        let (r, at) = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .with_context(|| format!("round {round}: {seen}/{watchers} watchers saw the write"))?
            .context("every watcher ended")?;
        anyhow::ensure!(
            r == round,
            "watcher reported round {r} during round {round}"
        );
        out.push(at.saturating_duration_since(sent));
        seen += 1;
    }
    Ok(())
}

/// Waits until `n` watchers have reported ready.
async fn await_ready(ready: &mut mpsc::UnboundedReceiver<()>, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        tokio::time::timeout(DEADLINE, ready.recv())
            .await
            .with_context(|| format!("{i}/{n} watchers established"))?
            .context("watchers ended before being established")?;
    }
    Ok(())
}

async fn over_https(scale: &Scale, sim: &Sim) -> anyhow::Result<Latencies> {
    let cluster = sim.add_cluster(ClusterOptions::new("fanout")).await?;
    let kubeconfig = cluster.admin_kubeconfig().to_yaml()?;
    let writer = client_from_kubeconfig(&kubeconfig).await?;
    create_namespace(&writer, NAMESPACE).await?;
    let api: Api<ConfigMap> = Api::namespaced(writer.clone(), NAMESPACE);
    let rv = api
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("list resourceVersion")?;

    // One client for all watchers, like an operator with many informers: its pool opens one
    // connection per open watch.
    let watch_client = client_from_kubeconfig(&kubeconfig).await?;
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut watchers = JoinSet::new();
    for _ in 0..scale.watchers {
        let api: Api<ConfigMap> = Api::namespaced(watch_client.clone(), NAMESPACE);
        let (ready_tx, seen_tx, rv) = (ready_tx.clone(), seen_tx.clone(), rv.clone());
        watchers.spawn(async move {
            let stream = api.watch(&WatchParams::default().timeout(290), &rv).await?;
            // The response headers arrived: the server has registered the watch.
            let _ = ready_tx.send(());
            futures::pin_mut!(stream);
            while let Some(event) = stream.try_next().await? {
                if let WatchEvent::Added(cm) = event
                    && let Some(round) = round_of(cm.metadata.name.as_deref())
                {
                    let _ = seen_tx.send((round, Instant::now()));
                }
            }
            anyhow::Ok(())
        });
    }
    drop((ready_tx, seen_tx));
    let opened = Instant::now();
    await_ready(&mut ready_rx, scale.watchers).await?;
    println!(
        "  {} watches established in {:.1} s",
        scale.watchers,
        opened.elapsed().as_secs_f64()
    );

    let mut latencies = Vec::with_capacity(scale.watchers * scale.rounds);
    for round in 0..scale.rounds {
        let sent = Instant::now();
        api.create(
            &PostParams::default(),
            &config_map(&format!("probe-{round}"), round),
        )
        .await?;
        collect_round(&mut seen_rx, round, scale.watchers, sent, &mut latencies).await?;
    }
    watchers.shutdown().await;
    latencies.sort();
    Ok(Latencies(latencies))
}

async fn in_process(scale: &Scale, sim: &Sim) -> anyhow::Result<Latencies> {
    let cluster = sim
        .add_cluster(ClusterOptions::new("fanout-inproc"))
        .await?;
    let server = cluster.api();
    server.create_object(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE},
    }))?;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut watchers = JoinSet::new();
    for _ in 0..scale.watchers {
        // Registered synchronously: the watch sees every later write.
        let mut stream =
            server.watch_objects("v1", "ConfigMap", Some(NAMESPACE), &WatchOptions::default())?;
        let seen_tx = seen_tx.clone();
        watchers.spawn(async move {
            while let Some(event) = stream.next().await {
                if event.kind == "ADDED"
                    && let Some(round) = round_of(event.object["metadata"]["name"].as_str())
                {
                    let _ = seen_tx.send((round, Instant::now()));
                }
            }
        });
    }
    drop(seen_tx);
    let mut latencies = Vec::with_capacity(scale.watchers * scale.rounds);
    for round in 0..scale.rounds {
        let mut object = serde_json::to_value(config_map(&format!("probe-{round}"), round))?;
        object["apiVersion"] = "v1".into();
        object["kind"] = "ConfigMap".into();
        object["metadata"]["namespace"] = NAMESPACE.into();
        let sent = Instant::now();
        server.create_object(object)?;
        collect_round(&mut seen_rx, round, scale.watchers, sent, &mut latencies).await?;
    }
    watchers.shutdown().await;
    latencies.sort();
    Ok(Latencies(latencies))
}

/// Measures and records the fan-out figures.
pub async fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let sim = Sim::in_memory();
    let https = over_https(scale, &sim).await?;
    report.add(Figure {
        id: "watch-fanout",
        figure: format!(
            "Watch fan-out over HTTPS: 1 write → {} kube-rs watchers ({} writes)",
            thousands(scale.watchers as f64),
            scale.rounds
        ),
        value: https.p99().as_secs_f64() * 1000.0,
        unit: "ms (p99)",
        display: https.display(),
        baseline: format!(
            "goal p99 ≤ {} s (Kubernetes API-call SLO) → p99 is {} of it",
            SLO.as_secs(),
            ratio(https.p99().as_secs_f64(), SLO.as_secs_f64())
        ),
    })?;
    let inproc = in_process(scale, &sim).await?;
    report.add(Figure {
        id: "watch-fanout-inprocess",
        figure: format!(
            "Watch fan-out in-process: 1 write → {} watch streams ({} writes)",
            thousands(scale.watchers as f64),
            scale.rounds
        ),
        value: inproc.p99().as_secs_f64() * 1000.0,
        unit: "ms (p99)",
        display: inproc.display(),
        baseline: format!(
            "same run over HTTPS: p99 {} → the server's part is {:.0}% of it",
            ms(https.p99()),
            100.0 * inproc.p99().as_secs_f64() / https.p99().as_secs_f64()
        ),
    })?;
    sim.shutdown().await;
    Ok(())
}
