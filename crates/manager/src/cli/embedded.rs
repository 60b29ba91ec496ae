//! `serve --embedded`: everything a person needs to try the API on one machine, in one
//! state directory (default `$XDG_STATE_HOME/fledge`, else `~/.local/state/fledge`):
//!
//! - `sim/`: the simulated world, `fledge-sim serve --state-dir <dir>/sim`, started as a
//!   separate process in its own process group (so stopping or killing the manager, even with
//!   Ctrl-C in a terminal, leaves the world running), or reused when one is already serving
//!   that directory: `sim.pid` names a live `fledge-sim`, `sim/kubeconfig` exists (the sim
//!   removes it on shutdown) and its API port accepts connections;
//! - `tls/`: the manager's self-signed CA and server certificate (`tls/ca.crt` for clients);
//! - `token` (mode 0600): a generated bearer token of tenant [`TENANT`], and `tokens`, the
//!   tokens file the manager reads.
//!
//! The tenant's namespace and the vSphere credentials Secret the examples name are created in
//! the simulated management cluster, so `cluster create -f examples/edge-1.yaml` just works.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use etcetera::BaseStrategy;

use super::serve::Options;

/// The tenant (namespace) the generated token belongs to: the one the examples use.
pub const TENANT: &str = "team-a";
/// How long a freshly started sim may take to write its kubeconfig.
const SIM_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The default state directory.
///
/// # Errors
/// When there is no home directory.
pub fn default_state_dir() -> anyhow::Result<PathBuf> {
    let base = etcetera::choose_base_strategy()
        .context("no home directory for the state dir: give --state-dir")?;
    let state = base
        .state_dir()
        .unwrap_or_else(|| base.data_dir())
        .join("fledge");
    Ok(state)
}

/// Prepares the state directory and the world, and points `options` at them.
///
/// # Errors
/// When the directory cannot be written or the sim does not come up.
pub fn prepare(
    options: &mut Options,
    state_dir: Option<PathBuf>,
    sim_speed: f64,
) -> anyhow::Result<()> {
    let dir = match state_dir {
        Some(dir) => dir,
        None => default_state_dir()?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    ensure_token(&dir)?;
    let sim = ensure_sim(&dir, sim_speed)?;
    let kubeconfig = dir.join("sim").join("kubeconfig");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(ensure_tenant(&kubeconfig))?;
    options.kubeconfig = Some(kubeconfig.clone());
    options.tls_dir = Some(dir.join("tls"));
    options.tls_files = None;
    options.tokens = Some(dir.join("tokens"));
    eprintln!(
        "Embedded mode, state in {dir}\n  \
         simulated world: fledge-sim pid {pid} ({how}), kubeconfig {kubeconfig}, log {log}\n  \
         CA certificate:  {dir}/tls/ca.crt\n  \
         token:           {dir}/token (tenant {TENANT})\n  \
         log in with:     fledge-manager login --server https://{listen} --ca-file {dir}/tls/ca.crt --token \"$(cat {dir}/token)\"\n  \
         stop the world:  kill $(cat {dir}/sim.pid)",
        dir = dir.display(),
        pid = sim.pid,
        how = if sim.reused { "reused" } else { "started" },
        kubeconfig = kubeconfig.display(),
        log = dir.join("sim.log").display(),
        listen = if options.listen.port() == 0 {
            "<the address printed as `listening on`>".to_string()
        } else {
            options.listen.to_string()
        },
    );
    Ok(())
}

/// Reads the token, or generates one (32 random bytes, hex) with its tokens file.
fn ensure_token(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("token");
    let token = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => {
            let mut bytes = [0u8; 32];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
                &mut bytes,
            )
            .context("reading /dev/urandom")?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            super::config::write_private(&path, &format!("{token}\n"))
                .map_err(|e| anyhow::anyhow!(e.message))?;
            token
        }
    };
    super::config::write_private(&dir.join("tokens"), &format!("{token} {TENANT}\n"))
        .map_err(|e| anyhow::anyhow!(e.message))?;
    Ok(())
}

/// The sim serving the state directory.
struct Sim {
    pid: u32,
    reused: bool,
}

/// Whether `pid` is a live (not zombie) `fledge-sim` process.
fn is_live_sim(pid: u32) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else {
        return false;
    };
    // `pid (comm) state ...`: the state follows the last `)`.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
    let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
    !zombie && String::from_utf8_lossy(&cmdline).contains("fledge-sim")
}

/// Whether the API server named in the kubeconfig accepts connections.
fn api_answers(kubeconfig: &Path) -> bool {
    let Ok(config) = kube::config::Kubeconfig::read_from(kubeconfig) else {
        return false;
    };
    let Some(server) = config
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref().and_then(|c| c.server.clone()))
    else {
        return false;
    };
    let authority = server
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    authority
        .parse::<std::net::SocketAddr>()
        .ok()
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        })
}

fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("sim.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Reuses the sim of this state directory, or starts one.
fn ensure_sim(dir: &Path, speed: f64) -> anyhow::Result<Sim> {
    let sim_dir = dir.join("sim");
    let kubeconfig = sim_dir.join("kubeconfig");
    if let Some(pid) = read_pid(dir)
        && is_live_sim(pid)
    {
        // Another manager may have just started it: give it the start-up time.
        let deadline = Instant::now() + SIM_START_TIMEOUT;
        while !(kubeconfig.exists() && api_answers(&kubeconfig)) {
            if Instant::now() > deadline || !is_live_sim(pid) {
                anyhow::bail!(
                    "fledge-sim (pid {pid}, from {}) runs but does not serve; stop it or look \
                     at {}",
                    dir.join("sim.pid").display(),
                    dir.join("sim.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        return Ok(Sim { pid, reused: true });
    }
    // A sim killed with SIGKILL leaves its kubeconfig behind; its presence must mean "serving".
    let _ = std::fs::remove_file(&kubeconfig);
    let _ = std::fs::remove_file(sim_dir.join("admin-addr"));
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("fledge-sim")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("fledge-sim"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sim.log"))
        .with_context(|| format!("opening {}", dir.join("sim.log").display()))?;
    let mut command = Command::new(&bin);
    command
        .arg("serve")
        .arg("--state-dir")
        .arg(&sim_dir)
        .arg("--speed")
        .arg(speed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a Ctrl-C or a kill of the manager's group spares the world.
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    std::fs::write(dir.join("sim.pid"), format!("{pid}\n"))
        .with_context(|| format!("writing {}", dir.join("sim.pid").display()))?;
    let deadline = Instant::now() + SIM_START_TIMEOUT;
    while !kubeconfig.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!(
                "fledge-sim exited with {status} before serving; see {}",
                dir.join("sim.log").display()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "fledge-sim did not write {} within {}s; see {}",
                kubeconfig.display(),
                SIM_START_TIMEOUT.as_secs(),
                dir.join("sim.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Dropping a std Child neither kills nor waits for it: the sim lives on.
    drop(child);
    Ok(Sim { pid, reused: false })
}

/// Creates the tenant's namespace and the credentials Secret the examples name, when missing.
async fn ensure_tenant(kubeconfig: &Path) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{Api, PostParams};
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TENANT},
    }))?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "vsphere-credentials", "namespace": TENANT},
        "stringData": {"username": "administrator@vsphere.local", "password": "simulated"},
    }))?;
    let exists = |r: &kube::Error| matches!(r, kube::Error::Api(s) if s.code == 409);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(err) if exists(&err) => {}
        Err(err) => return Err(err).context("creating the tenant namespace"),
    }
    let secrets: Api<Secret> = Api::namespaced(client, TENANT);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        Err(err) if exists(&err) => {}
        Err(err) => return Err(err).context("creating the vSphere credentials Secret"),
    }
    Ok(())
}
