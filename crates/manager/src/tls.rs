//! TLS material of the gRPC server: either files given on the command line, or a
//! self-signed CA plus a server certificate created once in a directory and reused.
//!
//! The directory layout (`ca.crt`, `ca.key`, `server.crt`, `server.key`) is what clients and,
//! later, agents trust: the same CA ([`crate::ca::Ca`]) issues agent client certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ca::{Ca, CaError};

/// PEM text of a private key: `Debug` prints `[redacted]` so it never reaches a log.
#[derive(Clone)]
pub struct Pem(pub String);

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Errors while preparing TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// No TLS material was named.
    #[error(
        "give --tls-cert and --tls-key, or --tls-dir (or both: the directory's CA then verifies agents)"
    )]
    Missing,
}

/// The server's certificate chain and key, plus the CA when the manager owns it.
#[derive(Debug)]
pub struct ServerTls {
    /// Server certificate (PEM).
    pub cert_pem: String,
    /// Server key (PEM).
    pub key_pem: Pem,
    /// The manager's CA, present with `--tls-dir`: it issues and verifies agent certificates.
    pub ca: Option<Arc<Ca>>,
}

/// Names the self-signed server certificate is valid for: loopback, since remote clients use
/// `--tls-cert`/`--tls-key` from a real PKI.
pub const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path`; with `secret`, the file is created with mode 0600 so a key is
/// never readable by others, not even for an instant.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

/// Loads the server certificate and key from files.
///
/// # Errors
/// A file cannot be read.
pub fn load_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
    Ok(ServerTls {
        cert_pem: read(cert)?,
        key_pem: Pem(read(key)?),
        ca: None,
    })
}

/// The TLS material for the command line's choice: the server certificate from `files` when
/// given, else from `dir`; the agent CA from `dir` in both cases (created there if missing).
/// With `files` and no `dir` there is no agent CA, and every AgentService call is
/// UNAUTHENTICATED.
///
/// # Errors
/// Neither is given, or see [`load_files`] and [`ensure_dir`].
pub fn load(files: Option<(&Path, &Path)>, dir: Option<&Path>) -> Result<ServerTls, TlsError> {
    match (files, dir) {
        (Some((cert, key)), None) => load_files(cert, key),
        (None, Some(dir)) => ensure_dir(dir),
        (Some((cert, key)), Some(dir)) => {
            let own = ensure_dir(dir)?;
            Ok(ServerTls {
                ca: own.ca,
                ..load_files(cert, key)?
            })
        }
        (None, None) => Err(TlsError::Missing),
    }
}

/// Loads the CA and server certificate from `dir`, creating whatever is missing.
///
/// # Guarantees
/// An existing CA is never replaced (clients and agents trust it); a missing server
/// certificate is re-issued by it.
///
/// # Errors
/// The directory or a file cannot be read or written, or a file does not parse.
pub fn ensure_dir(dir: &Path) -> Result<ServerTls, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let ca = if ca_crt.exists() && ca_key.exists() {
        Ca::load(&read(&ca_crt)?, &Pem(read(&ca_key)?))?
    } else {
        tracing::info!(dir = %dir.display(), "Creating the manager CA");
        let (ca, files) = Ca::generate()?;
        write(&ca_key, &files.key_pem.0, true)?;
        write(&ca_crt, &files.cert_pem, false)?;
        ca
    };
    let server_crt = dir.join("server.crt");
    let server_key = dir.join("server.key");
    if !(server_crt.exists() && server_key.exists()) {
        tracing::info!(dir = %dir.display(), "Issuing the server certificate");
        let issued = ca.issue_server(&SERVER_NAMES)?;
        write(&server_key, &issued.key_pem.0, true)?;
        write(&server_crt, &issued.cert_pem, false)?;
    }
    Ok(ServerTls {
        cert_pem: read(&server_crt)?,
        key_pem: Pem(read(&server_key)?),
        ca: Some(Arc::new(ca)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_server_certificate_keeps_the_directory_ca_for_agents() {
        let external = tempfile::tempdir().expect("tempdir");
        let own = tempfile::tempdir().expect("tempdir");
        let issued = ensure_dir(external.path()).expect("external PKI");
        let cert = external.path().join("server.crt");
        let key = external.path().join("server.key");
        let tls = load(Some((&cert, &key)), Some(own.path())).expect("both");
        assert_eq!(
            tls.cert_pem, issued.cert_pem,
            "server certificate from the files"
        );
        let ca = tls.ca.expect("agent CA from the directory");
        let own_ca = std::fs::read_to_string(own.path().join("ca.crt")).expect("ca.crt");
        assert_eq!(ca.cert_pem(), own_ca);
        assert!(
            load(Some((&cert, &key)), None)
                .expect("files only")
                .ca
                .is_none()
        );
        assert!(matches!(load(None, None), Err(TlsError::Missing)));
    }

    #[test]
    fn tls_dir_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_dir(dir.path()).expect("create");
        let second = ensure_dir(dir.path()).expect("reuse");
        assert_eq!(first.cert_pem, second.cert_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca.key", "server.key"] {
                let mode = std::fs::metadata(dir.path().join(key))
                    .expect("key exists")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
    }
}
