//! Memory, measured on a server that runs alone in a child process (this binary re-executed
//! with [`CHILD_ENV`] set): the parent reads the child's `VmRSS` from `/proc/<pid>/status`
//! before and after a step, so client allocations never count.
//!
//! The child hosts one cluster (`memory`) and answers commands on stdin, one per line:
//! - `clusters <n>`: host `n` more (idle) clusters,
//! - `crds`: create the Cluster API and CAPV CRDs in each of those,
//! - `capi`: create the objects of a 3 + 3 node workload cluster in each of those
//!   (in-process API: the objects are what counts, not how they arrived),
//!
//! replying `ok <count>` or `error <message>`. It exits when stdin closes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchParams};
use kube_sim::sim::{ClusterHandle, ClusterOptions, Sim};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinSet;

use crate::report::{Figure, Report, bytes, ratio, thousands};
use crate::throughput::{config_map, create_namespace};
use crate::{NAMESPACE, Scale, client_from_kubeconfig};

/// Set in the child's environment: run as the measured server.
pub const CHILD_ENV: &str = "KUBE_SIM_BENCH_CHILD";
/// Where the child writes its admin kubeconfig.
const KUBECONFIG_ENV: &str = "KUBE_SIM_BENCH_KUBECONFIG";
/// The directory of the upstream CRDs (`cluster-api-v1.14/`, `capv-v1.17/`).
const CRDS_ENV: &str = "KUBE_SIM_BENCH_CRDS";

/// kubeadm's minimum for a machine of a real cluster (Kubernetes docs, "Installing kubeadm"):
/// 2 GB of RAM. One simulated workload cluster stands in for at least one such machine.
const KUBEADM_MIN_RAM: f64 = 2e9;

/// How long a child step may take.
const STEP_DEADLINE: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// Child side

/// The child: a server and nothing else.
pub async fn child_main() -> anyhow::Result<()> {
    let kubeconfig = std::env::var_os(KUBECONFIG_ENV).context("kubeconfig path")?;
    // Parsed before the parent's first reading, so the parsed CRDs are not part of any delta.
    let crds = match std::env::var_os(CRDS_ENV) {
        Some(dir) => load_crds(Path::new(&dir))?,
        None => Vec::new(),
    };
    let sim = Sim::in_memory();
    let cluster = sim.add_cluster(ClusterOptions::new("memory")).await?;
    cluster
        .admin_kubeconfig()
        .write_atomic(Path::new(&kubeconfig))?;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(b"ready\n").await?;
    stdout.flush().await?;

    let mut workload: Vec<ClusterHandle> = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match child_command(&sim, &mut workload, &crds, line.trim()).await {
            Ok(count) => format!("ok {count}\n"),
            Err(err) => format!("error {}\n", format!("{err:#}").replace('\n', " ")),
        };
        stdout.write_all(reply.as_bytes()).await?;
        stdout.flush().await?;
    }
    sim.shutdown().await;
    Ok(())
}

async fn child_command(
    sim: &Sim,
    workload: &mut Vec<ClusterHandle>,
    crds: &[Value],
    line: &str,
) -> anyhow::Result<usize> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("clusters"), Some(n)) => {
            let n: usize = n.parse()?;
            for _ in 0..n {
                let name = format!("workload-{}", workload.len());
                workload.push(sim.add_cluster(ClusterOptions::new(name)).await?);
            }
            Ok(n)
        }
        (Some("crds"), None) => {
            anyhow::ensure!(!crds.is_empty(), "no CRDs were loaded ({CRDS_ENV} unset)");
            for cluster in workload.iter() {
                let api = cluster.api();
                for crd in crds {
                    api.create_object(crd.clone())
                        .with_context(|| format!("creating CRD {}", crd["metadata"]["name"]))?;
                }
            }
            Ok(crds.len() * workload.len())
        }
        (Some("capi"), None) => {
            let mut count = 0;
            for cluster in workload.iter() {
                count = crate::capi::load(&cluster.api())?;
            }
            Ok(count)
        }
        _ => anyhow::bail!("unknown command {line:?}"),
    }
}

/// The Cluster API and CAPV CRDs (what a pivoted workload cluster holds), parsed.
fn load_crds(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut crds = Vec::new();
    for sub in ["cluster-api-v1.14", "capv-v1.17"] {
        let sub = dir.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&sub)
            .with_context(|| format!("reading {}", sub.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.retain(|p| p.extension().is_some_and(|x| x == "yaml"));
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            let crd: Value = serde_saphyr::from_str(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            crds.push(crd);
        }
    }
    Ok(crds)
}

// ---------------------------------------------------------------------------------------------
// Parent side

/// A running child server.
struct Server {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    kubeconfig: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let kubeconfig_path = dir.path().join("kubeconfig");
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/crds");
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .env(CHILD_ENV, "1")
            .env(KUBECONFIG_ENV, &kubeconfig_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if crds.is_dir() {
            command.env(CRDS_ENV, &crds);
        }
        let mut child = command.spawn().context("starting the server process")?;
        let pid = child.id().context("child pid")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let mut server = Server {
            child,
            pid,
            stdin,
            stdout,
            kubeconfig: String::new(),
            _dir: dir,
        };
        let line = server.read_line().await?;
        anyhow::ensure!(line == "ready", "server process said {line:?}");
        server.kubeconfig = std::fs::read_to_string(&kubeconfig_path)?;
        Ok(server)
    }

    async fn read_line(&mut self) -> anyhow::Result<String> {
        tokio::time::timeout(STEP_DEADLINE, self.stdout.next_line())
            .await
            .context("server process step timed out")??
            .context("server process exited")
    }

    /// Sends a command; returns the count it replied.
    async fn command(&mut self, command: &str) -> anyhow::Result<usize> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let reply = self.read_line().await?;
        match reply.split_once(' ') {
            Some(("ok", count)) => Ok(count.parse()?),
            _ => anyhow::bail!("{command}: {reply}"),
        }
    }

    /// The child's resident set once it has stopped changing (background work such as the
    /// token controller settles within moments of a step).
    async fn settled_rss(&self) -> anyhow::Result<f64> {
        let mut last = rss_bytes(self.pid)?;
        let start = Instant::now();
        let mut stable = 0;
        while stable < 3 && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = rss_bytes(self.pid)?;
            if (now - last).abs() <= last * 0.002 {
                stable += 1;
            } else {
                stable = 0;
            }
            last = now;
        }
        Ok(last)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        // Closing stdin ends the child.
        drop(self.stdin);
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("server process did not exit")??;
        Ok(())
    }
}

/// `VmRSS` of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS missing")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024.0)
}

async fn per_object_and_watch(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let server = Server::start().await?;
    let clients = {
        let mut clients = Vec::with_capacity(scale.clients);
        for _ in 0..scale.clients {
            clients.push(client_from_kubeconfig(&server.kubeconfig).await?);
        }
        clients
    };
    create_namespace(&clients[0], NAMESPACE).await?;
    let create_all = |prefix: &'static str, n: usize| {
        let per_client = n / clients.len();
        let mut tasks = JoinSet::new();
        for (c, client) in clients.iter().enumerate() {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
            tasks.spawn(async move {
                for i in c * per_client..(c + 1) * per_client {
                    api.create(
                        &PostParams::default(),
                        &config_map(&format!("{prefix}-{i}"), i),
                    )
                    .await?;
                }
                anyhow::Ok(())
            });
        }
        let total = per_client * clients.len();
        async move {
            while let Some(result) = tasks.join_next().await {
                result??;
            }
            anyhow::Ok(total)
        }
    };
    // Warm-up: connections, the watch history (bounded per type) filled, allocator pools.
    create_all("warmup", 2_000.max(scale.clients)).await?;
    let before = server.settled_rss().await?;
    let n = create_all("stored", scale.stored).await?;
    let after = server.settled_rss().await?;
    let per_object = (after - before) / n as f64;
    let sample: ConfigMap = Api::namespaced(clients[0].clone(), NAMESPACE)
        .get("stored-0")
        .await?;
    let json_len = serde_json::to_vec(&sample)?.len() as f64;
    report.add(Figure {
        id: "memory-per-object",
        figure: format!(
            "Server memory per stored object (ConfigMap ~1 KiB data, n={})",
            thousands(n as f64)
        ),
        value: per_object,
        unit: "bytes",
        display: bytes(per_object),
        baseline: format!(
            "its JSON as served is {} → {} of it",
            bytes(json_len),
            ratio(per_object, json_len)
        ),
    })?;

    // Idle watches: one kube-rs client, so one HTTPS connection per watch (HTTP/1.1).
    let watch_client = client_from_kubeconfig(&server.kubeconfig).await?;
    create_namespace(&watch_client, "idle").await?;
    // Watch from the list's resourceVersion, as an informer does after its initial list.
    // (From "0" every watch start would also walk all stored ConfigMaps, which is not what this
    // figure is about.)
    let rv = Api::<ConfigMap>::namespaced(watch_client.clone(), "idle")
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("list resourceVersion")?;
    let before = server.settled_rss().await?;
    let mut streams = Vec::with_capacity(scale.idle_watches);
    let mut opening = JoinSet::new();
    for _ in 0..scale.idle_watches {
        let api: Api<ConfigMap> = Api::namespaced(watch_client.clone(), "idle");
        let rv = rv.clone();
        opening.spawn(async move {
            let stream = api.watch(&WatchParams::default().timeout(290), &rv).await?;
            anyhow::Ok(Box::pin(stream))
        });
    }
    let opened = Instant::now();
    let mut failed = Vec::new();
    while let Some(stream) = opening.join_next().await {
        match stream? {
            Ok(stream) => streams.push(stream),
            Err(err) => failed.push(format!("{err:#}")),
        }
    }
    println!(
        "  {} watches opened in {:.1} s, {} failed{}",
        streams.len(),
        opened.elapsed().as_secs_f64(),
        failed.len(),
        failed
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    anyhow::ensure!(failed.is_empty(), "{} watches failed to open", failed.len());
    let after = server.settled_rss().await?;
    let per_watch = (after - before) / scale.idle_watches as f64;
    report.add(Figure {
        id: "memory-per-watch",
        figure: format!(
            "Server memory per idle watch (kube-rs, own HTTPS connection, n={})",
            thousands(scale.idle_watches as f64)
        ),
        value: per_watch,
        unit: "bytes",
        display: bytes(per_watch),
        baseline: format!(
            "= {} stored ConfigMaps of this run",
            ratio(per_watch, per_object).trim_end_matches('×')
        ),
    })?;
    drop(streams);
    server.stop().await
}

async fn per_cluster(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let mut server = Server::start().await?;
    let n = scale.clusters;
    let base = server.settled_rss().await?;
    let started = Instant::now();
    server.command(&format!("clusters {n}")).await?;
    let empty = server.settled_rss().await?;
    println!(
        "  {n} clusters started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let crd_count = server.command("crds").await? / n.max(1);
    let with_crds = server.settled_rss().await?;
    println!(
        "  CRDs installed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let object_count = server.command("capi").await?;
    let loaded = server.settled_rss().await?;
    let per = |delta: f64| delta / n as f64;
    report.add(Figure {
        id: "memory-per-empty-cluster",
        figure: format!("Server memory per empty cluster (serving, n={n})"),
        value: per(empty - base),
        unit: "bytes",
        display: bytes(per(empty - base)),
        baseline: "part of the figure below".into(),
    })?;
    report.add(Figure {
        id: "memory-per-cluster-crds",
        figure: format!("… plus the {crd_count} Cluster API + CAPV CRDs, per cluster"),
        value: per(with_crds - empty),
        unit: "bytes",
        display: bytes(per(with_crds - empty)),
        baseline: "part of the figure below".into(),
    })?;
    report.add(Figure {
        id: "memory-per-cluster-objects",
        figure: format!("… plus {object_count} CAPI objects (3 + 3 machines), per cluster"),
        value: per(loaded - with_crds),
        unit: "bytes",
        display: bytes(per(loaded - with_crds)),
        baseline: "part of the figure below".into(),
    })?;
    let total = per(loaded - base);
    report.add(Figure {
        id: "memory-per-idle-cluster",
        figure: format!(
            "Server memory per idle workload cluster ({crd_count} CRDs + {object_count} CAPI objects, n={n})"
        ),
        value: total,
        unit: "bytes",
        display: bytes(total),
        baseline: format!(
            "a real node needs ≥ 2 GB (kubeadm minimum) → {}",
            ratio(total, KUBEADM_MIN_RAM)
        ),
    })?;
    server.stop().await
}

/// Measures and records the memory figures.
pub async fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    // Both halves run even if one fails; each error is reported.
    let objects = per_object_and_watch(report, scale).await;
    if let Err(err) = &objects {
        eprintln!("memory per object/watch failed: {err:#}");
    }
    let clusters = per_cluster(report, scale).await;
    if let Err(err) = &clusters {
        eprintln!("memory per cluster failed: {err:#}");
    }
    anyhow::ensure!(
        objects.is_ok() && clusters.is_ok(),
        "memory measurements failed"
    );
    Ok(())
}
