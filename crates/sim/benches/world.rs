//! Provisioning benchmark of the simulated world: N single-node workload clusters in one
//! in-process `World` (no manager), all created at once by applying the CAPI objects rendered
//! from `examples/single-node.yaml` (renamed per cluster) through the management cluster's
//! in-process API, as `tests/world.rs` does.
//!
//! `cargo bench -p fledge-sim --bench world` (what `make bench` runs) measures N = 100 and
//! N = 1,000; `SCALE=full` runs N = 1,000 only. `WORLD_BENCH_SIZES=10,50` overrides the sizes
//! and `WORLD_BENCH_SPEED` the speed factor (default 400).
//!
//! Each N runs in a child process (this binary re-executed with `WORLD_BENCH_N`), so its peak
//! RSS (`VmHWM`) and CPU time belong to that N alone. A cluster counts as done when its
//! Cluster is `Provisioned`, its control-plane Machine `Running` and its workload cluster's
//! only Node `Ready`.
//!
//! Figures go to `target/bench/world.jsonl` (section `world`, order 20) in the format of the
//! kube-sim bench (`crates/kube-sim/benches/api/report.rs`); `scripts/bench-report.py`
//! renders `BENCHMARKS.md`. The small writer below duplicates that one on purpose: bench
//! targets cannot share a module across crates without a helper crate.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fledge_core::render::{Phase, render};
use fledge_core::spec::WorkloadCluster;
use fledge_sim::clock::Speed;
use fledge_sim::world::{World, WorldConfig};
use kube_sim::api_server::ListOptions;
use serde_json::{Value, json};

const SINGLE_NODE: &str = include_str!("../../../examples/single-node.yaml");
const CAPI: &str = "cluster.x-k8s.io/v1beta2";
const NAMESPACE: &str = "default";
const SECTION: &str = "world";
const SECTION_TITLE: &str = "Simulated world: provisioning single-node clusters (fledge-sim)";
const SECTION_ORDER: u32 = 20;
const DEFAULT_SPEED: f64 = 400.0;
/// Cluster API's in-memory provider: 1,000 single-node clusters in about 15 minutes on a laptop.
const ANCHOR_SECS_PER_1000: f64 = 15.0 * 60.0;
/// A run that does not finish in this time fails (and records nothing for its N).
const DEADLINE: Duration = Duration::from_secs(40 * 60);

/// What one child process measured.
#[derive(Debug, Clone)]
struct Run {
    n: usize,
    speed: f64,
    wall_s: f64,
    apply_s: f64,
    first_done_s: f64,
    half_done_s: f64,
    base_rss: u64,
    peak_rss: u64,
    cpu_s: f64,
}

fn main() -> anyhow::Result<()> {
    let speed = std::env::var("WORLD_BENCH_SPEED")
        .ok()
        .map(|s| s.parse::<f64>())
        .transpose()
        .context("WORLD_BENCH_SPEED")?
        .unwrap_or(DEFAULT_SPEED);
    if let Ok(n) = std::env::var("WORLD_BENCH_N") {
        let n: usize = n.parse().context("WORLD_BENCH_N")?;
        return child(n, speed);
    }
    let scale = std::env::var("SCALE").unwrap_or_else(|_| "default".into());
    let sizes: Vec<usize> = match std::env::var("WORLD_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .context("WORLD_BENCH_SIZES")?,
        Err(_) if scale == "full" => vec![1_000],
        Err(_) => vec![100, 1_000],
    };
    let mut report = Report::create(&scale)?;
    let mut failed = false;
    let mut runs = Vec::new();
    for n in sizes {
        println!("world: provisioning {n} single-node clusters at --speed {speed}");
        match run_child(n, speed) {
            Ok(run) => {
                record(&mut report, &run)?;
                runs.push(run);
            }
            Err(e) => {
                eprintln!("world: N = {n} failed: {e:#}");
                failed = true;
            }
        }
    }
    notes(&mut report, speed, &runs)?;
    println!("world: results in {}", report.path.display());
    if failed {
        bail!("some measurements failed");
    }
    Ok(())
}

fn run_child(n: usize, speed: f64) -> anyhow::Result<Run> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let output = std::process::Command::new(exe)
        .env("WORLD_BENCH_N", n.to_string())
        .env("WORLD_BENCH_SPEED", speed.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the child")?;
    if !output.status.success() {
        bail!("child exited with {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("child printed no RESULT line: {text}"))?;
    let v: Value = serde_json::from_str(line)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Run {
        n,
        speed: f("speed"),
        wall_s: f("wall_s"),
        apply_s: f("apply_s"),
        first_done_s: f("first_done_s"),
        half_done_s: f("half_done_s"),
        base_rss: f("base_rss") as u64,
        peak_rss: f("peak_rss") as u64,
        cpu_s: f("cpu_s"),
    })
}

fn child(n: usize, speed: f64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = runtime.block_on(provision(n, speed))?;
    println!(
        "RESULT {}",
        json!({
            "speed": run.speed, "wall_s": run.wall_s, "apply_s": run.apply_s,
            "first_done_s": run.first_done_s, "half_done_s": run.half_done_s,
            "base_rss": run.base_rss, "peak_rss": run.peak_rss, "cpu_s": run.cpu_s,
        })
    );
    Ok(())
}

/// The rendered CAPI objects of `examples/single-node.yaml`, renamed to `name`.
fn rendered(name: &str) -> anyhow::Result<Vec<Value>> {
    let mut doc: Value = serde_saphyr::from_str(SINGLE_NODE)?;
    doc["metadata"]["name"] = json!(name);
    let cluster: WorkloadCluster = serde_json::from_value(doc)?;
    Ok(render(&cluster, Phase::Bootstrap)?)
}

async fn provision(n: usize, speed: f64) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let mut config = WorldConfig::new(dir.path());
    config.speed = Speed(speed);
    let world = World::start(config).await?;
    let api = world.management().api();
    // Render before the clock starts: rendering is the manager's work, not the world's.
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:04}")).collect();
    let mut objects = Vec::with_capacity(n);
    for name in &names {
        objects.push(rendered(name)?);
    }
    let base_rss = proc_status_bytes("VmRSS:")?;
    let cpu_start = cpu_seconds()?;
    let start = Instant::now();
    api.create_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vsphere-credentials", "namespace": NAMESPACE},
        "data": {"username": STANDARD.encode("admin"), "password": STANDARD.encode("secret")},
    }))
    .map_err(|e| anyhow!("creating the vSphere credentials: {e}"))?;
    for cluster in objects {
        for obj in cluster {
            api.create_object(obj.clone()).map_err(|e| {
                anyhow!("creating {} {}: {e}", obj["kind"], obj["metadata"]["name"])
            })?;
        }
    }
    let apply_s = start.elapsed().as_secs_f64();

    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut first_done_s = 0.0;
    let mut half_done_s = 0.0;
    let mut last_print = Instant::now();
    while done.len() < n {
        if start.elapsed() > DEADLINE {
            bail!("{} of {n} clusters done after {DEADLINE:?}", done.len());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        poll(&world, &api, &mut done)?;
        let t = start.elapsed().as_secs_f64();
        if first_done_s == 0.0 && !done.is_empty() {
            first_done_s = t;
        }
        if half_done_s == 0.0 && done.len() * 2 >= n {
            half_done_s = t;
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            eprintln!("world: {t:.0} s: {} of {n} clusters done", done.len());
            last_print = Instant::now();
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds()? - cpu_start;
    let peak_rss = proc_status_bytes("VmHWM:")?;
    world.shutdown().await;
    Ok(Run {
        n,
        speed,
        wall_s,
        apply_s,
        first_done_s,
        half_done_s,
        base_rss,
        peak_rss,
        cpu_s,
    })
}

/// Adds to `done` every cluster that is Provisioned with its CP Machine Running and its Node
/// Ready.
fn poll(
    world: &World,
    api: &kube_sim::ApiServer,
    done: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    let items = |kind: &str| -> anyhow::Result<Vec<Value>> {
        let list = api
            .list_objects(CAPI, kind, Some(NAMESPACE), &ListOptions::default())
            .map_err(|e| anyhow!("listing {kind}: {e}"))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    };
    let provisioned: BTreeSet<String> = items("Cluster")?
        .iter()
        .filter(|c| c["status"]["phase"] == "Provisioned")
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
        .filter(|name| !done.contains(name))
        .collect();
    if provisioned.is_empty() {
        return Ok(());
    }
    let running: BTreeSet<String> = items("Machine")?
        .iter()
        .filter(|m| m["status"]["phase"] == "Running")
        .filter_map(|m| m["spec"]["clusterName"].as_str().map(str::to_owned))
        .collect();
    for name in provisioned.intersection(&running) {
        let Some(handle) = world.workload_cluster(NAMESPACE, name) else {
            continue;
        };
        let nodes = handle
            .api()
            .list_objects("v1", "Node", None, &ListOptions::default())
            .map_err(|e| anyhow!("listing Nodes of {name}: {e}"))?;
        let nodes = nodes["items"].as_array().cloned().unwrap_or_default();
        let ready = nodes.len() == 1
            && nodes[0]["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            done.insert(name.clone());
        }
    }
    Ok(())
}

/// A `kB` field of /proc/self/status, in bytes.
fn proc_status_bytes(field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no {field} in /proc/self/status"))
}

/// User + system CPU time of this process so far, from /proc/self/stat (`utime`, `stime`, in
/// clock ticks of `USER_HZ`, which is 100 on Linux for every architecture this runs on).
fn cpu_seconds() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may contain spaces; fields after its closing paren are plain.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/self/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i - 3)
            .ok_or_else(|| anyhow!("short /proc/self/stat"))?
            .parse::<f64>()?)
    };
    Ok((tick(14)? + tick(15)?) / 100.0)
}

fn record(report: &mut Report, run: &Run) -> anyhow::Result<()> {
    let n = run.n;
    let anchor = ANCHOR_SECS_PER_1000 * n as f64 / 1_000.0;
    report.add(
        &format!("wall-{n}"),
        &format!(
            "{} single-node clusters created at once until all Provisioned, CP Machine Running, Node Ready (wall time, --speed {})",
            thousands(n as f64),
            run.speed
        ),
        run.wall_s,
        "s",
        &format!(
            "{:.1} s (apply {:.1} s; first done {:.1} s, half {:.1} s)",
            run.wall_s, run.apply_s, run.first_done_s, run.half_done_s
        ),
        &format!(
            "CAPI in-memory provider: 1,000 in ~15 min on a laptop (pro rata {:.0} s): {}",
            anchor,
            ratio(run.wall_s, anchor)
        ),
    )?;
    report.add(
        &format!("peak-rss-{n}"),
        &format!(
            "Peak RSS of the process with {} clusters (VmHWM)",
            thousands(n as f64)
        ),
        run.peak_rss as f64,
        "bytes",
        &format!(
            "{} (idle world {})",
            bytes(run.peak_rss as f64),
            bytes(run.base_rss as f64)
        ),
        "none published for CAPI in-memory",
    )?;
    let per = run.peak_rss.saturating_sub(run.base_rss) as f64 / n as f64;
    report.add(
        &format!("rss-per-cluster-{n}"),
        &format!(
            "RSS per cluster, (VmHWM − idle VmRSS) / {}",
            thousands(n as f64)
        ),
        per,
        "bytes",
        &bytes(per),
        "kube-sim idle workload cluster with CAPI objects: see the kube-sim section",
    )?;
    report.add(
        &format!("cpu-{n}"),
        &format!(
            "CPU time (user + system) to provision {} clusters",
            thousands(n as f64)
        ),
        run.cpu_s,
        "s",
        &format!(
            "{:.1} s ({:.0} ms per cluster, {:.2} cores busy on average)",
            run.cpu_s,
            run.cpu_s * 1_000.0 / n as f64,
            run.cpu_s / run.wall_s
        ),
        "none published for CAPI in-memory",
    )?;
    Ok(())
}

fn notes(report: &mut Report, speed: f64, runs: &[Run]) -> anyhow::Result<()> {
    report.note(&format!(
        "Method: one in-process `World` (`fledge_sim::world::World::start`, no manager) at `--speed {speed}`; \
         the objects rendered by `fledge-core` from `examples/single-node.yaml` (renamed per cluster) plus one \
         vSphere credentials Secret are created through the management cluster's in-process API, all before waiting; \
         a cluster is done when its Cluster is `Provisioned`, its CP Machine `Running` and its one Node `Ready` \
         (polled every 250 ms). Each N runs in its own child process so VmHWM and CPU time are its own; RSS per \
         cluster is (VmHWM − VmRSS of the idle world) / N."
    ))?;
    report.note(&format!(
        "Speed: every realistic delay (VM clone {} s + boot {} s per Machine) is divided by {speed}, i.e. {:.2} s per \
         cluster, and all clusters wait in parallel, so at this speed the wall time is the world's own work (API, \
         controllers, per-cluster CA and certificates, workload API servers), not simulated waiting. At `--speed 1` \
         the same run would take about {:.0} s more (one realistic VM clone + boot, overlapped across clusters).",
        fledge_sim::vsphere::CLONE_TIME.as_secs(),
        fledge_sim::vsphere::BOOT_TIME.as_secs(),
        (fledge_sim::vsphere::CLONE_TIME + fledge_sim::vsphere::BOOT_TIME).as_secs_f64() / speed,
        (fledge_sim::vsphere::CLONE_TIME + fledge_sim::vsphere::BOOT_TIME).as_secs_f64(),
    ))?;
    let per_cluster: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{:.0} ms CPU and {:.1} ms wall per cluster at N = {}",
                r.cpu_s * 1_000.0 / r.n as f64,
                r.wall_s * 1_000.0 / r.n as f64,
                thousands(r.n as f64)
            )
        })
        .collect();
    report.note(&format!(
        "Where it stands and why: {}. The wall time is against CAPI in-memory's anchor at a speed that makes \
         simulated waiting negligible, so it compares the cost of the control loops, not of VMs; both are \
         in-memory, but Fledge's world skips the network between controllers and API (in-process calls) and \
         runs every controller in one process. Cost per cluster grows with N: the simulated controllers are \
         level-triggered, and each pass of a controller host (woken by any watch event, see \
         `crates/sim/src/controllers/mod.rs` `pass`) lists and reconciles every object of every kind, so \
         provisioning N clusters at once costs O(N²) reconciles; at 1,000 nearly all clusters finish together \
         near the end because every pass walks all of them. Per-object work queues (as upstream's \
         controller-runtime uses) would make it linear. Memory is linear: each workload cluster is a kube-sim \
         API server with its own CA, certificates, store and HTTPS listener.",
        per_cluster.join("; ")
    ))?;
    Ok(())
}

// --- The results writer: a copy of `crates/kube-sim/benches/api/report.rs`'s (same JSON
// --- line format, read by `scripts/bench-report.py`), kept small.

struct Report {
    path: PathBuf,
    file: File,
    machine: Value,
    command: String,
    scale: String,
    date: String,
    seq: usize,
}

impl Report {
    /// Truncates `target/bench/world.jsonl` (or `$BENCH_OUT_DIR/world.jsonl`).
    fn create(scale: &str) -> anyhow::Result<Report> {
        let dir = match std::env::var_os("BENCH_OUT_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{SECTION}.jsonl"));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
            let command = String::from("cargo bench -p fledge-sim --bench world");
            if scale == "default" {
                command
            } else {
                format!("SCALE={scale} {command}")
            }
        });
        Ok(Report {
            path,
            file,
            machine: machine(),
            command,
            scale: scale.to_owned(),
            date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
            seq: 0,
        })
    }

    fn add(
        &mut self,
        id: &str,
        figure: &str,
        value: f64,
        unit: &str,
        display: &str,
        baseline: &str,
    ) -> anyhow::Result<()> {
        println!("  {figure:<58} {display:>28}   [{baseline}]");
        self.seq += 1;
        self.write(&json!({
            "section": SECTION, "section_title": SECTION_TITLE, "order": SECTION_ORDER,
            "seq": self.seq, "id": id, "figure": figure, "value": value, "unit": unit,
            "display": display, "baseline": baseline, "command": self.command,
            "scale": self.scale, "machine": self.machine, "date": self.date,
        }))
    }

    fn note(&mut self, note: &str) -> anyhow::Result<()> {
        self.write(&json!({"section": SECTION, "note": note}))
    }

    fn write(&mut self, record: &Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let memory_bytes = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024);
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, v)| v.trim());
    let load_avg: f64 = read("/proc/loadavg")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    json!({
        "nproc": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "memory_bytes": memory_bytes, "cpu_model": cpu_model, "load_avg": load_avg,
    })
}

/// `12345.6` → `12,346`.
fn thousands(value: f64) -> String {
    let digits = (value.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as KiB or MiB with three significant digits.
fn bytes(value: f64) -> String {
    let (scaled, unit) = if value.abs() >= 1024.0 * 1024.0 {
        (value / (1024.0 * 1024.0), "MiB")
    } else {
        (value / 1024.0, "KiB")
    };
    if scaled.abs() >= 100.0 {
        format!("{scaled:.0} {unit}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1} {unit}")
    } else {
        format!("{scaled:.2} {unit}")
    }
}

/// `value / baseline` as `0.12×`.
fn ratio(value: f64, baseline: f64) -> String {
    let r = value / baseline;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.3}×")
    }
}
