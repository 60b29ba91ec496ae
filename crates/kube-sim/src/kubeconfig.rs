//! Kubeconfig files for a simulated cluster, in the standard layout (`clusters`, `users`,
//! `contexts`, `current-context`) that kubectl and kube-rs (`Kubeconfig::from_yaml`,
//! `Config::from_custom_kubeconfig`) read.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// How a kubeconfig's user authenticates. `Debug` never prints credentials.
#[derive(Clone)]
pub enum Credentials {
    /// A bearer token (the admin token or a ServiceAccount token).
    Token(String),
    /// A client certificate and its key, both PEM.
    ClientCertificate {
        /// The certificate, PEM.
        cert_pem: String,
        /// The private key, PEM.
        key_pem: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token([redacted])"),
            Credentials::ClientCertificate { .. } => f.write_str("ClientCertificate([redacted])"),
        }
    }
}

/// A kubeconfig with one cluster, one user and one context, which is current.
#[derive(Clone, Debug)]
pub struct Kubeconfig {
    /// The name of the cluster entry (the simulated cluster's name).
    pub cluster_name: String,
    /// The name of the user entry.
    pub user_name: String,
    /// The API endpoint, e.g. `https://127.0.0.1:6443`.
    pub server: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
    /// How the user authenticates.
    pub credentials: Credentials,
    /// The context's default namespace, if any.
    pub namespace: Option<String>,
}

/// Errors writing a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Serializing to YAML failed.
    #[error("serializing the kubeconfig: {0}")]
    Serialize(String),
    /// Writing the file failed.
    #[error("writing the kubeconfig {path}: {source}")]
    Write {
        /// The destination.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Kubeconfig {
    /// The context name: `<user>@<cluster>`, as kubeadm and CAPI name theirs.
    pub fn context_name(&self) -> String {
        format!("{}@{}", self.user_name, self.cluster_name)
    }

    /// The kubeconfig as a JSON value (JSON is valid YAML, but [`Kubeconfig::to_yaml`] is nicer
    /// to read).
    pub fn to_value(&self) -> Value {
        let user = match &self.credentials {
            Credentials::Token(token) => json!({ "token": token }),
            Credentials::ClientCertificate { cert_pem, key_pem } => json!({
                "client-certificate-data": STANDARD.encode(cert_pem),
                "client-key-data": STANDARD.encode(key_pem),
            }),
        };
        let mut context = json!({ "cluster": self.cluster_name, "user": self.user_name });
        if let Some(namespace) = &self.namespace {
            context["namespace"] = json!(namespace);
        }
        let context_name = self.context_name();
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": self.cluster_name,
                "cluster": {
                    "server": self.server,
                    "certificate-authority-data": STANDARD.encode(&self.ca_pem),
                },
            }],
            "users": [{ "name": self.user_name, "user": user }],
            "contexts": [{ "name": context_name, "context": context }],
            "current-context": context_name,
            "preferences": {},
        })
    }

    /// The kubeconfig as YAML.
    ///
    /// # Errors
    /// Only if the YAML serializer fails, which it does not for these plain values.
    pub fn to_yaml(&self) -> Result<String, KubeconfigError> {
        serde_saphyr::to_string(&self.to_value())
            .map_err(|err| KubeconfigError::Serialize(err.to_string()))
    }

    /// Writes the kubeconfig to `path` atomically: to a temporary file in the same directory
    /// (mode 0600), then renamed over `path`, so a reader never sees half a file.
    ///
    /// # Errors
    /// If serializing or any file operation fails.
    pub fn write_atomic(&self, path: &Path) -> Result<(), KubeconfigError> {
        let yaml = self.to_yaml()?;
        let io = |source| KubeconfigError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io)?;
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kubeconfig".to_owned());
        let tmp = dir.join(format!(".{file_name}.tmp"));
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(yaml.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_config() -> Kubeconfig {
        Kubeconfig {
            cluster_name: "management".to_owned(),
            user_name: "admin".to_owned(),
            server: "https://127.0.0.1:6443".to_owned(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned(),
            credentials: Credentials::Token("s3cret".to_owned()),
            namespace: Some("default".to_owned()),
        }
    }

    #[test]
    fn yaml_is_a_standard_kubeconfig_that_kube_reads() {
        let yaml = token_config().to_yaml().unwrap();
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("admin@management"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(STANDARD.encode(&token_config().ca_pem).as_str())
        );
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.token.is_some());
        let context = parsed.contexts[0].context.as_ref().unwrap();
        assert_eq!(context.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn debug_output_hides_credentials() {
        let printed = format!("{:?}", token_config());
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn write_atomic_leaves_only_the_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        token_config().write_atomic(&path).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("kubeconfig")]);
        assert!(fs::read_to_string(&path).unwrap().contains("s3cret"));
    }
}
