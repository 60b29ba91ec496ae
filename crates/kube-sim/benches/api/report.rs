//! Results as JSON lines in `target/bench/<section>.jsonl`, the input of
//! `scripts/bench-report.py` (which writes `BENCHMARKS.md`).
//!
//! One line per figure. The fields the renderer reads: `section`, `section_title`, `order`,
//! `figure`, `display`, `baseline`, `command`, `machine`, `date`; `value`/`unit` keep the raw
//! number for anyone comparing runs.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::Scale;

/// The section of BENCHMARKS.md these figures belong to (one per bench binary / issue).
const SECTION: &str = "kube-sim";
const SECTION_TITLE: &str = "Simulated Kubernetes API server (kube-sim)";
/// Sections are ordered by this key in BENCHMARKS.md.
const SECTION_ORDER: u32 = 10;

/// Where the measurements ran.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub nproc: usize,
    /// `MemTotal` of /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// The 1-minute load average when the run started: other work on the machine (parallel
    /// builds) inflates latencies and lowers throughput.
    pub load_avg: f64,
}

impl Machine {
    fn detect() -> Machine {
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let load_avg = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            nproc,
            memory_bytes,
            cpu_model,
            load_avg,
        }
    }
}

#[derive(Debug, Serialize)]
struct Record<'a> {
    section: &'a str,
    section_title: &'a str,
    order: u32,
    /// Position of the figure within its section.
    seq: usize,
    id: &'a str,
    figure: &'a str,
    value: f64,
    unit: &'a str,
    display: &'a str,
    baseline: &'a str,
    command: &'a str,
    scale: &'a str,
    machine: &'a Machine,
    date: &'a str,
}

/// One figure to record.
#[derive(Debug)]
pub struct Figure {
    /// A stable identifier, e.g. `serial-create`.
    pub id: &'static str,
    /// What was measured, for the table.
    pub figure: String,
    /// The number.
    pub value: f64,
    /// Its unit, e.g. `objects/s`.
    pub unit: &'static str,
    /// The number as the table shows it (with detail such as latency percentiles).
    pub display: String,
    /// The goal or baseline it is held against, with the ratio where one exists.
    pub baseline: String,
}

/// The open results file of this run.
pub struct Report {
    path: PathBuf,
    file: File,
    machine: Machine,
    command: String,
    scale: String,
    date: String,
    seq: usize,
}

impl Report {
    /// Truncates `target/bench/kube-sim.jsonl` (or `$BENCH_OUT_DIR/kube-sim.jsonl`).
    pub fn create(scale: &Scale) -> anyhow::Result<Report> {
        let dir = match std::env::var_os("BENCH_OUT_DIR") {
            Some(dir) => PathBuf::from(dir),
            // benches run with the package directory as cwd; results go to the workspace target.
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{SECTION}.jsonl"));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
            let mut command = String::from("cargo bench -p kube-sim --bench api");
            if scale.name != "default" {
                command = format!("SCALE={} {command}", scale.name);
            }
            command
        });
        Ok(Report {
            path,
            file,
            machine: Machine::detect(),
            command,
            scale: scale.name.clone(),
            date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
            seq: 0,
        })
    }

    /// The results file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a figure (flushed at once, so a later failure keeps it) and prints it.
    pub fn add(&mut self, figure: Figure) -> anyhow::Result<()> {
        println!(
            "  {:<58} {:>28}   [{}]",
            figure.figure, figure.display, figure.baseline
        );
        self.seq += 1;
        let record = Record {
            section: SECTION,
            section_title: SECTION_TITLE,
            order: SECTION_ORDER,
            seq: self.seq,
            id: figure.id,
            figure: &figure.figure,
            value: figure.value,
            unit: figure.unit,
            display: &figure.display,
            baseline: &figure.baseline,
            command: &self.command,
            scale: &self.scale,
            machine: &self.machine,
            date: &self.date,
        };
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

#[derive(Debug, Serialize)]
struct Note<'a> {
    section: &'a str,
    note: &'a str,
}

impl Report {
    /// Records a note on the method, shown under the section's table.
    pub fn note(&mut self, note: &str) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(&Note {
            section: SECTION,
            note,
        })?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

/// `12345.6` → `12,346`.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

/// Bytes as KiB or MiB with three significant digits.
pub fn bytes(value: f64) -> String {
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

/// `value / baseline` as `2.3×`.
pub fn ratio(value: f64, baseline: f64) -> String {
    let r = value / baseline;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.3}×")
    }
}
