//! The client config file (`$XDG_CONFIG_HOME/fledge/config.yaml`, else
//! `~/.config/fledge/config.yaml`) that `fledge-manager login` writes and every client
//! command reads when a connection flag and its environment variable are both absent.
//!
//! It holds the token, so it is written with mode 0600.

use std::path::{Path, PathBuf};

use etcetera::BaseStrategy;
use serde::{Deserialize, Serialize};

use super::Exit;
use super::client::{CliError, Connection, ConnectionArgs};

/// Contents of the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    /// `https://host:port` of the manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Absolute path of the CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Where the config file lives.
///
/// # Errors
/// Failure when there is no home directory to put it in.
pub fn path() -> Result<PathBuf, CliError> {
    let base = etcetera::choose_base_strategy().map_err(|e| {
        CliError::failure(format!(
            "cannot find the config directory (set XDG_CONFIG_HOME or HOME): {e}"
        ))
    })?;
    Ok(base.config_dir().join("fledge").join("config.yaml"))
}

/// Reads the config file; a missing file is an empty config.
///
/// # Errors
/// Bad input when the file exists but cannot be read or parsed.
pub fn load() -> Result<ClientConfig, CliError> {
    let Ok(path) = path() else {
        return Ok(ClientConfig::default());
    };
    load_from(&path)
}

fn load_from(path: &Path) -> Result<ClientConfig, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_saphyr::from_str(&text).map_err(|e| {
            CliError::bad_input(format!(
                "{}: {e}; fix it or run `fledge-manager login` again",
                path.display()
            ))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
        Err(err) => Err(CliError::bad_input(format!("{}: {err}", path.display()))),
    }
}

/// Writes `contents` to `path` with mode 0600 (created so, never readable by others in
/// between), creating the parent directory.
///
/// # Errors
/// Failure when the file cannot be written.
pub fn write_private(path: &Path, contents: &str) -> Result<(), CliError> {
    use std::io::Write;
    let fail = |e: std::io::Error| CliError::failure(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An existing file keeps its mode on open: tighten it first.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        }
    }
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)
}

/// `fledge-manager login`: checks the settings against the manager (one list call), then
/// stores them in the config file.
pub async fn login(args: &ConnectionArgs) -> Result<Exit, CliError> {
    let (Some(server), Some(ca_file), Some(token)) = (&args.server, &args.ca_file, &args.token)
    else {
        return Err(CliError::bad_input(
            "login needs --server, --ca-file and --token (or FLEDGE_SERVER, FLEDGE_CA_FILE and \
             FLEDGE_TOKEN)",
        ));
    };
    let ca_file = std::path::absolute(ca_file)
        .map_err(|e| CliError::bad_input(format!("{}: {e}", ca_file.display())))?;
    let connection = Connection {
        server: server.clone(),
        ca_file: ca_file.clone(),
        token: Some(token.clone()),
    };
    let client = connection.connect().await?;
    let mut api = client.api.clone();
    client
        .call(
            "checking the token",
            api.list_clusters(fledge_core::proto::v1::ListClustersRequest {
                page_size: 1,
                page_token: String::new(),
            }),
        )
        .await?;
    let config = ClientConfig {
        server: Some(server.clone()),
        ca_file: Some(ca_file),
        token: Some(token.clone()),
    };
    let path = path()?;
    let text = serde_saphyr::to_string(&config)
        .map_err(|e| CliError::failure(format!("serializing the config: {e}")))?;
    write_private(&path, &text)?;
    println!(
        "Logged in to {server}; settings saved in {}",
        path.display()
    );
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fledge").join("config.yaml");
        let config = ClientConfig {
            server: Some("https://127.0.0.1:8443".into()),
            ca_file: Some("/tmp/ca.crt".into()),
            token: Some("secret".into()),
        };
        write_private(&path, &serde_saphyr::to_string(&config).unwrap()).unwrap();
        assert_eq!(load_from(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            load_from(&dir.path().join("missing.yaml")).unwrap(),
            ClientConfig::default()
        );
    }
}
