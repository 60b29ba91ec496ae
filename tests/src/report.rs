//! A writer of benchmark figures in the JSONL format `scripts/bench-report.py` renders into
//! `BENCHMARKS.md` (one record per figure; see the script's header for the fields).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Appends figures of one section to `target/bench/<section>.jsonl` (or `$BENCH_OUT_DIR`).
pub struct Report {
    /// The file written.
    pub path: PathBuf,
    file: File,
    section: String,
    title: String,
    order: u32,
    command: String,
    machine: Value,
    date: String,
    seq: u32,
}

impl Report {
    /// Creates (truncates) the section's file; `default_command` is shown unless make passed
    /// `BENCH_COMMAND`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(
        section: &str,
        title: &str,
        order: u32,
        default_command: &str,
    ) -> std::io::Result<Self> {
        let dir = match std::env::var_os("BENCH_OUT_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench"),
        };
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{section}.jsonl"));
        let file = File::create(&path)?;
        Ok(Report {
            path,
            file,
            section: section.into(),
            title: title.into(),
            order,
            command: std::env::var("BENCH_COMMAND").unwrap_or_else(|_| default_command.into()),
            machine: machine(),
            date: k8s_openapi::jiff::Zoned::now()
                .strftime("%Y-%m-%d")
                .to_string(),
            seq: 0,
        })
    }

    /// One figure. `goal` is the stated goal (empty: none) and whether it was met.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn figure(
        &mut self,
        id: &str,
        figure: &str,
        value: f64,
        unit: &str,
        display: &str,
        (goal, goal_met): (&str, Option<bool>),
    ) -> std::io::Result<()> {
        println!("  {figure:<60} {display:>24}   [{goal}]");
        self.seq += 1;
        let mut record = json!({
            "section": self.section, "section_title": self.title, "order": self.order,
            "seq": self.seq, "id": id, "figure": figure, "value": value, "unit": unit,
            "display": display, "command": self.command, "machine": self.machine,
            "date": self.date,
        });
        if !goal.is_empty() {
            record["goal"] = json!(goal);
            record["goal_met"] = json!(goal_met);
        }
        self.write(&record)
    }

    /// A note rendered under the section's table.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn note(&mut self, note: &str) -> std::io::Result<()> {
        let record = json!({"section": self.section, "note": note});
        self.write(&record)
    }

    fn write(&mut self, record: &Value) -> std::io::Result<()> {
        let mut line = record.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}

/// The machine the figures were measured on.
pub fn machine() -> Value {
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

/// A process's memory figure from `/proc/<pid>/status` (`VmRSS` or `VmHWM`), in bytes.
pub fn proc_memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// CPU time (user + system) a process used so far, in seconds.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((utime + stime) / 100.0)
}

/// Pids of live processes whose executable's file name is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f == name))
                .unwrap_or(false)
        })
        .collect()
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; 0 when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn this_process_has_memory_and_cpu_figures() {
        let pid = std::process::id();
        assert!(proc_memory(pid, "VmRSS").is_some_and(|b| b > 0));
        assert!(proc_cpu_seconds(pid).is_some_and(|s| s >= 0.0));
    }
}
