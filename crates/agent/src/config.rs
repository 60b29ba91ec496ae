//! The agent's configuration: command line and environment as the Deployment in
//! `deploy/agent/deployment.yaml` sets them, and the identity files.

use std::path::{Path, PathBuf};

use clap::Parser;

/// Command line of the agent (every option also reads an environment variable).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fledge-agent",
    version,
    about = "Keeps a workload cluster at its Fledge spec, with or without the manager"
)]
pub struct Cli {
    /// Directory of the identity Secret's files: `tls.crt`, `tls.key`, `ca.crt`, `endpoint`.
    #[arg(
        long,
        env = "FLEDGE_IDENTITY_DIR",
        default_value = "/etc/fledge/identity"
    )]
    pub identity_dir: PathBuf,
    /// Namespace of this cluster's WorkloadCluster (and CAPI objects).
    #[arg(long, env = "FLEDGE_CLUSTER_NAMESPACE")]
    pub cluster_namespace: String,
    /// Name of this cluster's WorkloadCluster.
    #[arg(long, env = "FLEDGE_CLUSTER_NAME")]
    pub cluster_name: String,
    /// The manager's AgentService, `https://host:port`; defaults to the identity's `endpoint` file.
    #[arg(long, env = "FLEDGE_MANAGER_ENDPOINT")]
    pub manager_endpoint: Option<String>,
    /// Seconds between full reconciles when nothing happens (drift repair of objects the agent
    /// does not watch).
    #[arg(long, env = "FLEDGE_AGENT_RESYNC_SECONDS", default_value_t = 30)]
    pub resync_seconds: u64,
    /// The simulated world's network file (see `crates/sim/src/faults.rs`).
    #[arg(long, env = crate::netfile::NETWORK_FILE_ENV, hide = true)]
    pub network_file: Option<PathBuf>,
}

/// The WorkloadCluster this agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its namespace (also the namespace of the CAPI objects).
    pub namespace: String,
    /// Its name (also the CAPI Cluster's name).
    pub name: String,
}

impl Identity {
    /// `<namespace>/<name>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The agent's client certificate, key, the manager CA and endpoint (PEM text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Client certificate chain (PEM).
    pub cert: String,
    /// Private key (PEM).
    pub key: String,
    /// The manager's CA (PEM).
    pub ca: String,
    /// The endpoint written next to them (may be empty).
    pub endpoint: String,
}

/// Reading the identity failed.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct IdentityError {
    /// The file.
    pub path: String,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

/// Reads the identity files of `dir`.
///
/// # Errors
/// [`IdentityError`] if `tls.crt`, `tls.key` or `ca.crt` cannot be read; a missing
/// `endpoint` is an empty endpoint.
pub fn read_credentials(dir: &Path) -> Result<Credentials, IdentityError> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|source| IdentityError {
            path: path.display().to_string(),
            source,
        })
    };
    Ok(Credentials {
        cert: read("tls.crt")?,
        key: read("tls.key")?,
        ca: read("ca.crt")?,
        endpoint: read("endpoint").unwrap_or_default().trim().to_owned(),
    })
}
