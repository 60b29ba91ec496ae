//! The harness: one simulated cluster per test (HTTPS, admin kubeconfig) and a `kubectl` runner
//! with its own discovery cache and a timeout on every call.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::sim::{ClusterOptions, Sim};

/// The kubectl the suite drives. Missing kubectl fails the suite: it never skips.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Safety net for one kubectl call (its own `--request-timeout` is shorter).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Safety net for polling waits.
pub const WAIT: Duration = Duration::from_secs(15);

/// What a kubectl call returned.
#[derive(Debug)]
pub struct Output {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A simulated cluster and a kubectl pointed at it.
pub struct Cluster {
    /// A kube-rs client for setup and assertions.
    pub client: Client,
    kubeconfig: PathBuf,
    cache: PathBuf,
    dir: tempfile::TempDir,
    _sim: Sim,
}

impl Cluster {
    /// Starts a cluster; fails the test if kubectl is missing.
    pub async fn start() -> Cluster {
        assert!(
            Path::new(KUBECTL).is_file(),
            "{KUBECTL} is missing: the kubectl conformance suite needs kubectl v1.32 installed there"
        );
        let sim = Sim::in_memory();
        let handle = sim
            .add_cluster(ClusterOptions::new("kubectl"))
            .await
            .expect("start a simulated cluster");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        handle
            .admin_kubeconfig()
            .write_atomic(&kubeconfig)
            .expect("write kubeconfig");
        let kc = Kubeconfig::read_from(&kubeconfig).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        let client = Client::try_from(config).expect("client");
        let cache = dir.path().join("kube-cache");
        Cluster {
            client,
            kubeconfig,
            cache,
            dir,
            _sim: sim,
        }
    }

    /// Writes `content` to a file in the test's directory.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write file");
        p
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            // A per-test discovery cache: ports are reused across runs with different CRDs.
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--request-timeout=15s")
            .args(args)
            .env("HOME", self.dir.path())
            .env("KUBECTL_EXTERNAL_DIFF", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl with `args` (and `stdin`), within [`CALL_TIMEOUT`].
    pub async fn run_with_input(&self, args: &[&str], stdin: &str) -> Output {
        use tokio::io::AsyncWriteExt as _;
        let mut child = self.command(args).spawn().expect("spawn kubectl");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("write stdin");
        drop(input);
        let out = match tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output()).await {
            Ok(out) => out.expect("kubectl ran"),
            Err(_) => panic!("kubectl {args:?} did not finish within {CALL_TIMEOUT:?}"),
        };
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl with `args`, within [`CALL_TIMEOUT`].
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, "").await
    }

    /// Runs kubectl, asserting success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(
            out.code, 0,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Runs kubectl with `-o json` appended and parses the output.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {args:?} -o json: {e}\n{out}"))
    }

    /// Spawns a long-running kubectl (e.g. `get --watch`); dropping the child kills it.
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.command(args).spawn().expect("spawn kubectl")
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`] with `what`.
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a whitespace-separated table row in `table` has all of `cells`, in order.
pub fn has_row(table: &str, cells: &[&str]) -> bool {
    table.lines().any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let mut it = cols.iter();
        cells.iter().all(|c| it.any(|col| col == c))
    })
}
