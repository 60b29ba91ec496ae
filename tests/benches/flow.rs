//! End-to-end benchmark through the whole world: `fledge-sim` (controllers on), one
//! `fledge-manager serve` and a real `fledge-agent` process per workload cluster.
//!
//! For each N (default 10; `SCALE=full`: 10 and 100; `FLOW_BENCH_SIZES=5,20` overrides) N
//! single-node clusters sharing one profile are created at once over gRPC, and the bench
//! measures:
//! - provisioning throughput: time until every cluster is `Ready` (p50 and last), and the peak
//!   RSS of the sim, the manager and the largest agent;
//! - the agents at idle: RSS (largest, median) and CPU per agent, the manager's CPU;
//! - spec fan-out through the real agents: the shared profile changes, and the time until each
//!   cluster's agent acknowledged the new generation (as the manager recorded it in
//!   `status.agent.appliedGeneration`), p50/p99/max;
//! - add-on drift: a ConfigMap the profile's add-on applied is deleted in the workload
//!   cluster, and the time until the agent put it back (p50/max);
//! - the pivot and the reverse pivot of a 1 CP + 1 pool cluster and of `examples/edge-1.yaml`
//!   (3 CP + 2 pools): objects moved and duration (from the manager's `Move finished` log
//!   line), and how soon Cluster API resumed in the target after the pivot (the first Machine
//!   created there after the move finished; creation times have one-second resolution).
//!
//! Needs release binaries: `cargo build --release --workspace --bins` (make bench does).
//! Figures go to `target/bench/flow.jsonl` (section `flow`); `scripts/bench-report.py`
//! renders BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fledge_core::proto::v1;
use fledge_core::spec::{ClusterProfile, WorkloadCluster};
use fledge_e2e::report::{Report, pids_named, proc_cpu_seconds, proc_memory, quantile};
use fledge_e2e::{World, WorldOptions, authed, create_credentials, example_cluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

const TENANT: &str = "team-a";
const TOKEN: &str = "token-a";
const PROFILE: &str = "bench";
const SPEED: u32 = 100;
const FANOUT_ROUNDS: usize = 10;
const DRIFT_ROUNDS: usize = 10;
const IDLE_WINDOW: Duration = Duration::from_secs(20);
const READY_DEADLINE: Duration = Duration::from_secs(30 * 60);
const MIB: f64 = 1024.0 * 1024.0;

/// What the watcher saw of each cluster: when it first was Ready, and when each applied
/// generation was first recorded.
#[derive(Default)]
struct Seen {
    ready_at: BTreeMap<String, Instant>,
    applied: BTreeMap<String, (i64, Instant)>,
    generation: BTreeMap<String, i64>,
}

fn profile(round: usize) -> ClusterProfile {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {"name": PROFILE, "namespace": TENANT},
        "spec": {"addons": [{
            "name": "bench-config",
            "order": 10,
            "manifests": [{
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "bench-config", "namespace": "default"},
                "data": {"round": round.to_string()},
            }],
        }]},
    }))
    .expect("profile")
}

fn main() -> anyhow::Result<()> {
    let scale = std::env::var("SCALE").unwrap_or_else(|_| "default".into());
    let sizes: Vec<usize> = match std::env::var("FLOW_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) if scale == "full" => vec![10, 100],
        Err(_) => vec![10],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = Report::create(
        "flow",
        "End to end: manager + simulated world + real agents",
        40,
        "cargo bench -p fledge-e2e --bench flow",
    )?;
    report.note(&format!(
        "Single-node clusters sharing one profile (one ConfigMap add-on), created at once over \
         gRPC; the sim runs at speed {SPEED} (every simulated delay divided by {SPEED}). \
         Latencies are wall-clock on this machine with everything (sim, manager, N agents) on \
         its 2 cores."
    ))?;
    runtime.block_on(pivots(&mut report))?;
    for (i, n) in sizes.iter().enumerate() {
        runtime.block_on(run(&mut report, *n, i == 0))?;
    }
    println!("wrote {}", report.path.display());
    Ok(())
}

async fn run(report: &mut Report, n: usize, measure_drift: bool) -> anyhow::Result<()> {
    println!("flow bench: N = {n}");
    let mut world = World::start(WorldOptions {
        speed: SPEED,
        ..Default::default()
    })
    .await;
    world.start_manager("bench-manager").await;
    let kube = world.kube().await;
    create_credentials(&kube, TENANT).await;
    let profiles: Api<ClusterProfile> = Api::namespaced(kube.clone(), TENANT);
    profiles.create(&PostParams::default(), &profile(0)).await?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = tokio::spawn(watch_clusters(kube.clone(), seen.clone()));

    // All clusters at once.
    let started = Instant::now();
    let mut creates = Vec::new();
    for i in 0..n {
        let name = format!("flow-{i:03}");
        let mut cluster = example_cluster("single-node.yaml", TENANT, &name);
        cluster.spec.profile = Some(PROFILE.into());
        let mut grpc = world.grpc(0).await;
        creates.push(async move {
            grpc.create_cluster(authed(
                v1::CreateClusterRequest {
                    name: name.clone(),
                    spec: Some(v1::ClusterSpec::from(&cluster.spec)),
                },
                TOKEN,
            ))
            .await
            .map(|_| ())
        });
    }
    for result in futures::future::join_all(creates).await {
        result?;
    }
    let all_ready = tokio::time::timeout(READY_DEADLINE, async {
        loop {
            let ready = seen.lock().unwrap().ready_at.len();
            if ready >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if all_ready.is_err() {
        anyhow::bail!("not every cluster became Ready within {READY_DEADLINE:?}");
    }
    let ready_secs: Vec<f64> = seen
        .lock()
        .unwrap()
        .ready_at
        .values()
        .map(|t| t.duration_since(started).as_secs_f64())
        .collect();
    let last = quantile(&ready_secs, 1.0);
    report.figure(
        &format!("ready-all-{n}"),
        &format!("{n} clusters created at once: all Ready"),
        last,
        "s",
        &format!("{last:.1} s (p50 {:.1} s)", quantile(&ready_secs, 0.5)),
        (
            "report (CAPI in-memory: 1,000 single-node ≈ 15 min on a laptop)",
            None,
        ),
    )?;
    let sim_pid = world.sim.id().unwrap_or_default();
    let manager_pid = world.managers[0].child.id().unwrap_or_default();
    let agents = pids_named("fledge-agent");
    let peak = |pid: u32| proc_memory(pid, "VmHWM").unwrap_or_default() as f64 / MIB;
    let agent_peak = agents.iter().map(|p| peak(*p)).fold(0.0, f64::max);
    report.figure(
        &format!("peak-rss-{n}"),
        &format!("{n} clusters: peak RSS sim / manager / largest agent"),
        peak(manager_pid),
        "MiB",
        &format!(
            "{:.0} / {:.0} / {:.1} MiB",
            peak(sim_pid),
            peak(manager_pid),
            agent_peak
        ),
        ("report", None),
    )?;
    report.figure(
        &format!("agent-rss-reconciling-{n}"),
        &format!("agent peak RSS while provisioning ({n} clusters)"),
        agent_peak,
        "MiB",
        &format!("{agent_peak:.1} MiB"),
        ("report", None),
    )?;

    // Idle: the agents and the manager with nothing to do.
    let cpu = |pids: &[u32]| -> f64 { pids.iter().filter_map(|p| proc_cpu_seconds(*p)).sum() };
    let agents_before = cpu(&agents);
    let manager_before = cpu(&[manager_pid]);
    tokio::time::sleep(IDLE_WINDOW).await;
    let window = IDLE_WINDOW.as_secs_f64();
    let agent_cpu_pct =
        (cpu(&agents) - agents_before) / window / agents.len().max(1) as f64 * 100.0;
    let manager_cpu_pct = (cpu(&[manager_pid]) - manager_before) / window * 100.0;
    let idle_rss: Vec<f64> = agents
        .iter()
        .filter_map(|p| proc_memory(*p, "VmRSS"))
        .map(|b| b as f64 / MIB)
        .collect();
    let idle_max = quantile(&idle_rss, 1.0);
    report.figure(
        &format!("agent-rss-idle-{n}"),
        &format!(
            "agent RSS at idle ({} agents): largest (median)",
            idle_rss.len()
        ),
        idle_max,
        "MiB",
        &format!("{idle_max:.1} MiB ({:.1} MiB)", quantile(&idle_rss, 0.5)),
        ("≤ 30 MiB", Some(idle_max <= 30.0)),
    )?;
    report.figure(
        &format!("agent-cpu-idle-{n}"),
        &format!("agent CPU at idle, per agent, over {window:.0} s"),
        agent_cpu_pct,
        "%",
        &format!("{agent_cpu_pct:.2} % of a core"),
        ("report", None),
    )?;
    report.figure(
        &format!("manager-cpu-idle-flow-{n}"),
        &format!("manager CPU at idle with {n} Ready clusters"),
        manager_cpu_pct,
        "%",
        &format!("{manager_cpu_pct:.2} % of a core"),
        ("report", None),
    )?;

    // Spec fan-out through real agents.
    let mut latencies = Vec::new();
    for round in 1..=FANOUT_ROUNDS {
        let before = Instant::now();
        let patched = profiles
            .patch(
                PROFILE,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(profile(round)),
            )
            .await?;
        let profile_generation = patched.metadata.generation.unwrap_or_default();
        let acked = tokio::time::timeout(Duration::from_secs(300), async {
            loop {
                let done: Vec<f64> = {
                    let seen = seen.lock().unwrap();
                    seen.generation
                        .iter()
                        .filter_map(|(name, cluster_generation)| {
                            let target = fledge_core::names::spec_generation(
                                *cluster_generation,
                                profile_generation,
                            );
                            let (applied, at) = seen.applied.get(name)?;
                            (*applied >= target).then(|| at.duration_since(before).as_secs_f64())
                        })
                        .collect()
                };
                if done.len() >= n {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        match acked {
            Ok(done) => latencies.extend(done),
            Err(_) => anyhow::bail!("round {round}: not every agent acknowledged in 300 s"),
        }
    }
    let ms: Vec<f64> = latencies.iter().map(|s| s * 1000.0).collect();
    let p99 = quantile(&ms, 0.99);
    report.figure(
        &format!("spec-to-ack-{n}"),
        &format!("spec change → agent ack recorded, {n} real agents × {FANOUT_ROUNDS} rounds"),
        p99,
        "ms",
        &format!(
            "p50 {:.0} ms, p99 {p99:.0} ms, max {:.0} ms",
            quantile(&ms, 0.5),
            quantile(&ms, 1.0)
        ),
        ("report", None),
    )?;

    if measure_drift {
        let workload = world.workload_kube(TENANT, "flow-000").await;
        let configmaps: Api<ConfigMap> = Api::namespaced(workload, "default");
        let mut drift = Vec::new();
        for _ in 0..DRIFT_ROUNDS {
            let old = configmaps.get("bench-config").await?;
            configmaps
                .delete("bench-config", &Default::default())
                .await?;
            let deleted = Instant::now();
            let back = tokio::time::timeout(Duration::from_secs(300), async {
                loop {
                    if let Ok(Some(cm)) = configmaps.get_opt("bench-config").await
                        && cm.metadata.uid != old.metadata.uid
                    {
                        return deleted.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            match back {
                Ok(took) => drift.push(took.as_secs_f64() * 1000.0),
                Err(_) => anyhow::bail!("the deleted add-on ConfigMap never came back"),
            }
        }
        let max = quantile(&drift, 1.0);
        report.figure(
            "drift",
            &format!("add-on drift (object deleted) corrected, {DRIFT_ROUNDS} rounds"),
            max,
            "ms",
            &format!("p50 {:.0} ms, max {max:.0} ms", quantile(&drift, 0.5)),
            ("report", None),
        )?;
    }
    watcher.abort();
    drop(world);
    Ok(())
}

async fn watch_clusters(kube: Client, seen: Arc<Mutex<Seen>>) {
    let api: Api<WorkloadCluster> = Api::namespaced(kube, TENANT);
    let mut events = Box::pin(kube::runtime::WatchStreamExt::applied_objects(
        kube::runtime::watcher(api, Default::default()),
    ));
    while let Some(event) = events.next().await {
        let Ok(cluster) = event else { continue };
        let now = Instant::now();
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let mut seen = seen.lock().unwrap();
        seen.generation.insert(
            name.clone(),
            cluster.metadata.generation.unwrap_or_default(),
        );
        let Some(status) = cluster.status else {
            continue;
        };
        if status.phase.as_deref() == Some("Ready") {
            seen.ready_at.entry(name.clone()).or_insert(now);
        }
        if let Some(applied) = status.agent.and_then(|a| a.applied_generation) {
            let entry = seen.applied.entry(name).or_insert((applied, now));
            if entry.0 != applied {
                *entry = (applied, now);
            }
        }
    }
}

/// One `Move finished` line of the manager's log.
#[derive(Debug, Clone)]
struct Move {
    cluster: String,
    direction: String,
    objects: u64,
    duration_ms: u64,
    finished_at: k8s_openapi::jiff::Timestamp,
}

/// The `Move finished` lines of a manager log (tracing's default format: timestamp, level,
/// spans with their fields, then `key=value` fields).
fn moves(log: &str) -> Vec<Move> {
    let field = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!("{key}="))? + key.len() + 1;
        let rest = &line[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '}' || c == ':')
            .unwrap_or(rest.len());
        Some(rest[..end].trim_matches('"').to_string())
    };
    log.lines()
        .filter(|l| l.contains("Move finished"))
        .filter_map(|l| {
            Some(Move {
                cluster: field(l, "cluster")?,
                direction: field(l, "direction")?,
                objects: field(l, "objects")?.parse().ok()?,
                duration_ms: field(l, "duration_ms")?.parse().ok()?,
                finished_at: l.split_whitespace().next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Pivot and reverse-pivot figures for a small and a production-shaped cluster.
async fn pivots(report: &mut Report) -> anyhow::Result<()> {
    println!("flow bench: pivots");
    let mut world = World::start(WorldOptions {
        speed: SPEED,
        ..Default::default()
    })
    .await;
    world.start_manager("bench-manager").await;
    let kube = world.kube().await;
    create_credentials(&kube, TENANT).await;
    let profiles: Api<ClusterProfile> = Api::namespaced(kube.clone(), TENANT);
    for profile in fledge_e2e::example_profiles("edge-1.yaml", TENANT) {
        profiles.create(&PostParams::default(), &profile).await?;
    }
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube.clone(), TENANT);
    let mut small = example_cluster("single-node.yaml", TENANT, "pivot-small");
    small.spec.workers = vec![fledge_core::spec::WorkerPool {
        name: "work".into(),
        replicas: Some(1),
        machine: small.spec.control_plane.machine.clone(),
        template: None,
        labels: Default::default(),
        taints: Vec::new(),
        autoscaling: None,
    }];
    let edge = example_cluster("edge-1.yaml", TENANT, "pivot-edge");
    for (cluster, shape) in [(small, "1 CP + 1 pool"), (edge, "3 CP + 2 pools (edge-1)")] {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        clusters.create(&PostParams::default(), &cluster).await?;
        fledge_e2e::wait_for_status_within(&clusters, &name, "Ready", READY_DEADLINE, |s| {
            s.phase.as_deref() == Some("Ready")
        })
        .await;
        let log = world.manager_log(0);
        let forward = moves(&log)
            .into_iter()
            .find(|m| m.cluster.ends_with(&format!("/{name}")) && m.direction != "reverse")
            .ok_or_else(|| anyhow::anyhow!("no Move finished line for {name}"))?;
        // Cluster API resumed in the target: the first Machine created there after the move.
        let workload = world.workload_kube(TENANT, &name).await;
        let machines =
            fledge_e2e::dynamic(&workload, TENANT, "cluster.x-k8s.io", "v1beta2", "Machine")
                .list(&Default::default())
                .await?;
        let resumed = machines
            .items
            .iter()
            .filter_map(|m| m.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .filter(|created| {
                // Creation times have whole seconds: a Machine of the move's second counts.
                created.as_second() >= forward.finished_at.as_second()
            })
            .min()
            .map(|first| (first.as_second() - forward.finished_at.as_second()).max(0) as f64);
        report.figure(
            &format!("pivot-{name}"),
            &format!("pivot, {shape}: objects moved, duration"),
            forward.duration_ms as f64,
            "ms",
            &format!("{} objects in {} ms", forward.objects, forward.duration_ms),
            (
                "≤ 5 s (clusterctl: ~23 objects for 1 CP + 1 worker)",
                Some(forward.duration_ms <= 5000),
            ),
        )?;
        if let Some(resumed) = resumed {
            report.figure(
                &format!("pivot-resumed-{name}"),
                &format!("pivot, {shape}: Cluster API creating Machines in the target after"),
                resumed,
                "s",
                &format!("≤ {:.0} s (1 s resolution)", resumed.max(1.0)),
                (
                    "≤ 10 s (users report 10–20 min after clusterctl move)",
                    Some(resumed <= 10.0),
                ),
            )?;
        }
        // Delete: the reverse pivot moves the grown cluster back.
        clusters.delete(&name, &Default::default()).await?;
        let gone = tokio::time::timeout(READY_DEADLINE, async {
            while clusters.get_opt(&name).await.ok().flatten().is_some() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if gone.is_err() {
            anyhow::bail!("{name} was never deleted");
        }
        let log = world.manager_log(0);
        if let Some(back) = moves(&log)
            .into_iter()
            .find(|m| m.cluster.ends_with(&format!("/{name}")) && m.direction == "reverse")
        {
            report.figure(
                &format!("reverse-pivot-{name}"),
                &format!("reverse pivot (delete), {shape}: objects moved back, duration"),
                back.duration_ms as f64,
                "ms",
                &format!("{} objects in {} ms", back.objects, back.duration_ms),
                ("report", None),
            )?;
        }
    }
    report.note(
        "The pivot happens right after the first control-plane machine, before the agent scales \
         the control plane and creates the pools, so both clusters move the same kinds of \
         objects (Cluster, VSphereCluster, KubeadmControlPlane, its template, the Machine with \
         its KubeadmConfig, VSphereMachine and VSphereVM, and the cluster's Secrets); the reverse \
         pivot at deletion moves the grown cluster.",
    )?;
    drop(world);
    Ok(())
}
