//! Benchmarks of the simulated Kubernetes API server, driven the way real clients drive it:
//! kube-rs over HTTPS.
//!
//! `cargo bench -p kube-sim --bench api` (what `make bench` runs; `SCALE=full` for larger N)
//! measures
//! - throughput of create/get/update on one cluster, serial and with concurrent clients,
//! - watch fan-out: one write, the time until each of 1,000 watchers has decoded the event,
//! - memory per stored object, per idle watch and per idle workload cluster holding the
//!   Cluster API objects of a 3 + 3 node cluster (CRDs included).
//!
//! Throughput and fan-out run the server in this process (client and server share its two
//! cores, as they would on a developer machine). Memory is measured in a child process that
//! hosts only the server (this binary re-executed), reading its `VmRSS`, so client-side
//! allocations do not count.
//!
//! Each figure is appended as one JSON line to `target/bench/kube-sim.jsonl`;
//! `scripts/bench-report.py` renders `BENCHMARKS.md` from every `target/bench/*.jsonl`. The
//! process exits non-zero if any measurement failed, after writing what it measured.

mod capi;
mod fanout;
mod memory;
mod report;
mod throughput;

use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::config::KubeConfigOptions;

use crate::report::Report;

/// The namespace the benchmarks write to.
const NAMESPACE: &str = "bench";

/// How large the measurements are.
#[derive(Debug, Clone)]
pub struct Scale {
    /// `default` or `full`.
    pub name: String,
    /// Objects per serial create/get/update run.
    pub serial: usize,
    /// Objects per concurrent run (split across `clients`).
    pub concurrent: usize,
    /// Concurrent clients, each with its own connection.
    pub clients: usize,
    /// Watchers of the fan-out.
    pub watchers: usize,
    /// Writes of the fan-out (each delivered to every watcher).
    pub rounds: usize,
    /// Objects stored for the memory-per-object figure.
    pub stored: usize,
    /// Idle watches for the memory-per-watch figure.
    pub idle_watches: usize,
    /// Idle workload clusters for the memory-per-cluster figure.
    pub clusters: usize,
}

impl Scale {
    fn from_env() -> anyhow::Result<Scale> {
        let name = std::env::var("SCALE").unwrap_or_default();
        match name.as_str() {
            "" | "default" => Ok(Scale {
                name: "default".into(),
                serial: 5_000,
                concurrent: 16_000,
                clients: 16,
                watchers: 1_000,
                rounds: 50,
                stored: 20_000,
                idle_watches: 1_000,
                clusters: 100,
            }),
            "full" => Ok(Scale {
                name: "full".into(),
                serial: 20_000,
                concurrent: 64_000,
                clients: 16,
                watchers: 1_000,
                rounds: 200,
                stored: 100_000,
                idle_watches: 5_000,
                clusters: 200,
            }),
            // Checks that every part works, in seconds; its figures mean little.
            "smoke" => Ok(Scale {
                name: "smoke".into(),
                serial: 100,
                concurrent: 320,
                clients: 16,
                watchers: 50,
                rounds: 3,
                stored: 500,
                idle_watches: 50,
                clusters: 3,
            }),
            other => anyhow::bail!("SCALE must be `default`, `full` or `smoke`, not {other:?}"),
        }
    }
}

/// A kube-rs client for a kubeconfig, as an application would build it.
pub async fn client_from_kubeconfig(yaml: &str) -> anyhow::Result<Client> {
    let parsed = kube::config::Kubeconfig::from_yaml(yaml).context("parsing the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    Client::try_from(config).context("building the client")
}

/// The `q`-quantile (0..=1) of sorted durations, nearest-rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with a precision that suits the magnitude.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os(memory::CHILD_ENV).is_some() {
        // Re-executed as the server whose memory the parent measures.
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(memory::child_main());
    }
    let scale = Scale::from_env()?;
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = Report::create(&scale)?;
    println!(
        "kube-sim bench, scale {} → {}",
        scale.name,
        report.path().display()
    );
    let mut failures = Vec::new();
    let parts: [(&str, Part); 3] = [
        ("throughput", |r, s| Box::pin(throughput::run(r, s))),
        ("fanout", |r, s| Box::pin(fanout::run(r, s))),
        ("memory", |r, s| Box::pin(memory::run(r, s))),
    ];
    for (name, part) in parts {
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        println!("== {name}");
        if let Err(err) = runtime.block_on(part(&mut report, &scale)) {
            // Keep going: the other parts' figures are still worth having.
            eprintln!("{name} failed: {err:#}");
            failures.push(name);
        }
    }
    for note in NOTES {
        report.note(note)?;
    }
    if !failures.is_empty() {
        anyhow::bail!("benchmarks failed: {}", failures.join(", "));
    }
    Ok(())
}

/// How the figures were obtained and where the baselines come from (shown under the table).
const NOTES: &[&str] = &[
    "Throughput and fan-out: server and kube-rs clients run in one process and share its CPUs; \
     every request is HTTPS (TLS 1.3 over loopback, HTTP/1.1: kube-rs has no HTTP/2, so each \
     concurrent client and each open watch is its own connection). Latencies are per request, \
     from the call until kube-rs returns the decoded object.",
    "Fan-out latency: from the start of the create request until a watcher holds the decoded \
     ADDED event; all watchers in one kube-rs client (one connection each). The in-process row \
     is the same with `ApiServer::watch_objects` streams and an in-process create.",
    "Memory: the server runs alone in a child process (the bench binary re-executed); figures \
     are the growth of its VmRSS divided by the count, after a warm-up, once RSS is stable. \
     Workload clusters are `Sim::add_cluster` clusters (own port, CA, store), loaded through the \
     in-process API with the upstream Cluster API v1.14 and CAPV v1.17 CRDs \
     (../shared/reference/crds) and 44 objects of a 3 + 3 machine vSphere cluster (Cluster, \
     VSphereCluster, KubeadmControlPlane, MachineDeployment, MachineSet, MachineHealthCheck, \
     templates, 6 × Machine/VSphereMachine/VSphereVM/KubeadmConfig/bootstrap Secret, 5 cluster \
     Secrets), statuses written as the controllers would.",
    "Baselines: etcd figures are etcd 3.2 alone on 3 members of 8 vCPU with 256-byte values \
     (etcd benchmark docs, op guide “Performance”: 1 client over 1 connection for serial, \
     1,000 clients over 100 connections for concurrent); a real kube-apiserver adds its own \
     work on top, so they are the bar a real cluster sets, not what it reaches. 1 s is \
     Kubernetes' API-call latency SLO (sig-scalability; upstream has no watch-latency SLO). \
     2 GB is kubeadm's minimum RAM per machine of a real cluster.",
];

type Part = for<'a> fn(
    &'a mut Report,
    &'a Scale,
) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;
