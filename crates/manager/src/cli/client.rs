//! What every client command shares: where the manager is (flags > environment > the file
//! `login` writes), the TLS channel, the bearer token, and the translation of gRPC and
//! transport errors into messages that say what to fix, each with its [`Exit`] code.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use fledge_core::proto::v1::cluster_service_client::ClusterServiceClient;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::Exit;
use super::config::{self, ClientConfig};

/// How long connecting (TCP plus the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of each unary call; watches have none.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection flags every client command takes. Each one falls back to its environment
/// variable, then to the file written by `fledge-manager login`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// Address of the manager, e.g. https://127.0.0.1:8443.
    #[arg(long, global = true, env = "FLEDGE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// CA certificate (PEM) that signed the manager's server certificate, e.g. the
    /// `ca.crt` of the manager's --tls-dir.
    #[arg(long, global = true, env = "FLEDGE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Bearer token of your tenant (from the manager's tokens file). Prefer FLEDGE_TOKEN or
    /// `login`: a flag is visible to other users in the process list.
    #[arg(
        long,
        global = true,
        env = "FLEDGE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// An error of a client command: the message to print and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// The process exit code.
    pub exit: Exit,
    /// What went wrong and what to do about it (may span several lines).
    pub message: String,
}

impl CliError {
    /// An error with an exit code.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    /// Bad input (exit 2).
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(Exit::BadInput, message)
    }

    /// An operational failure (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(Exit::Failure, message)
    }
}

/// The resolved connection settings.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `https://host:port`.
    pub server: String,
    /// The CA file.
    pub ca_file: PathBuf,
    /// The bearer token, if any.
    pub token: Option<String>,
}

impl Connection {
    /// Resolves the settings: each flag (or its environment variable), else the config file.
    ///
    /// # Errors
    /// Bad input when no server or CA is known or the config file is unreadable.
    pub fn resolve(args: &ConnectionArgs) -> Result<Self, CliError> {
        let file = if args.server.is_some() && args.ca_file.is_some() && args.token.is_some() {
            ClientConfig::default()
        } else {
            config::load()?
        };
        let server = args.server.clone().or(file.server).ok_or_else(|| {
            CliError::bad_input(
                "no manager address: give --server https://HOST:PORT, set FLEDGE_SERVER, or run \
                 `fledge-manager login --server ... --ca-file ... --token ...` once",
            )
        })?;
        let ca_file = args.ca_file.clone().or(file.ca_file).ok_or_else(|| {
            CliError::bad_input(
                "no CA certificate: give --ca-file FILE (the manager's ca.crt), set \
                 FLEDGE_CA_FILE, or run `fledge-manager login` once",
            )
        })?;
        let token = args.token.clone().or(file.token).filter(|t| !t.is_empty());
        Ok(Self {
            server,
            ca_file,
            token,
        })
    }

    /// Connects (TCP and TLS) to the manager.
    ///
    /// # Errors
    /// Bad input for a malformed address or unreadable CA; exit 3 when the manager cannot be
    /// reached or its certificate does not match.
    pub async fn connect(&self) -> Result<Client, CliError> {
        let uri: tonic::codegen::http::Uri = self.server.parse().map_err(|e| {
            CliError::bad_input(format!(
                "--server {:?} is not a URL ({e}); use https://HOST:PORT",
                self.server
            ))
        })?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(CliError::bad_input(format!(
                "--server {:?} must be https://HOST:PORT (the manager only speaks TLS)",
                self.server
            )));
        }
        let pem = std::fs::read_to_string(&self.ca_file).map_err(|e| {
            CliError::bad_input(format!(
                "cannot read the CA file {}: {e}",
                self.ca_file.display()
            ))
        })?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(CliError::bad_input(format!(
                "the CA file {} holds no PEM certificate",
                self.ca_file.display()
            )));
        }
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .domain_name(host);
        let endpoint = Endpoint::from_shared(self.server.clone())
            .and_then(|e| e.tls_config(tls))
            .map_err(|e| CliError::bad_input(format!("--server {:?}: {}", self.server, chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(err)) => return Err(self.transport_error(&chain(&err))),
            Err(_) => {
                return Err(CliError::new(
                    Exit::Connection,
                    format!(
                        "cannot reach the manager at {}: no answer within {}s; check --server \
                         (or FLEDGE_SERVER) and that `fledge-manager serve` is running",
                        self.server,
                        CONNECT_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
        let auth = BearerToken {
            header: match &self.token {
                Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                    CliError::bad_input("the token holds characters a header cannot carry")
                })?),
                None => None,
            },
        };
        Ok(Client {
            api: ClusterServiceClient::with_interceptor(channel, auth),
            has_token: self.token.is_some(),
        })
    }

    /// Turns a transport error (its whole source chain as text) into what to fix.
    fn transport_error(&self, text: &str) -> CliError {
        let server = &self.server;
        let ca = self.ca_file.display();
        let message = if text.contains("UnknownIssuer")
            || text.contains("BadSignature")
            || text.contains("invalid peer certificate")
                && !text.contains("NotValidForName")
                && !text.contains("Expired")
        {
            format!(
                "TLS: the certificate of {server} is not signed by the CA in {ca}; give the \
                 manager's CA with --ca-file (the ca.crt in its --tls-dir)\n  ({text})"
            )
        } else if text.contains("NotValidForName") {
            format!(
                "TLS: the certificate of {server} is not valid for that host name; connect \
                 with a name the certificate holds (the self-signed one: localhost or \
                 127.0.0.1)\n  ({text})"
            )
        } else if text.contains("Expired") || text.contains("NotValidYet") {
            format!("TLS: the certificate of {server} is expired or not yet valid\n  ({text})")
        } else if text.contains("refused") {
            format!(
                "cannot reach the manager at {server}: connection refused; is `fledge-manager \
                 serve` running there? (check --server or FLEDGE_SERVER)"
            )
        } else {
            format!("cannot connect to the manager at {server}: {text}")
        };
        CliError::new(Exit::Connection, message)
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// The generated client with the token interceptor.
pub type Api = ClusterServiceClient<InterceptedService<Channel, BearerToken>>;

/// A connected client.
#[derive(Clone)]
pub struct Client {
    /// The gRPC client; call through [`Client::call`] for deadlines and error messages.
    pub api: Api,
    /// Whether a token is sent (to say "no token" rather than "bad token").
    pub has_token: bool,
}

impl Client {
    /// Runs one unary call under [`CALL_TIMEOUT`]; `what` names it in errors
    /// (e.g. `get cluster "edge-1"`).
    ///
    /// # Errors
    /// The call's status, turned into a [`CliError`].
    pub async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, CliError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.status_error(what, &status)),
            Err(_) => Err(CliError::new(
                Exit::Connection,
                format!(
                    "{what}: the manager did not answer within {}s",
                    CALL_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// Turns a gRPC status into a message and exit code.
    pub fn status_error(&self, what: &str, status: &Status) -> CliError {
        status_error(what, status, self.has_token)
    }
}

/// Turns a gRPC status into a message and exit code (see [`Exit`]).
pub fn status_error(what: &str, status: &Status, has_token: bool) -> CliError {
    let message = status.message();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => {
            let mut text = format!("{what}: invalid: {message}");
            if let Some(bad) = status.get_details_bad_request() {
                // One `path: reason` line per problem, like `validate` prints them.
                text = format!("{what}: invalid");
                for violation in bad.field_violations {
                    text.push_str(&format!("\n{}: {}", violation.field, violation.description));
                }
            }
            CliError::new(Exit::BadInput, text)
        }
        Code::NotFound => CliError::new(Exit::NotFound, format!("{what}: {message}")),
        Code::Unauthenticated if !has_token => CliError::new(
            Exit::Connection,
            format!(
                "{what}: no token was sent (UNAUTHENTICATED); give --token, set FLEDGE_TOKEN, or \
                 run `fledge-manager login`"
            ),
        ),
        Code::Unauthenticated => CliError::new(
            Exit::Connection,
            format!(
                "{what}: the manager rejected the token (UNAUTHENTICATED: {message}); check \
                 --token / FLEDGE_TOKEN or run `fledge-manager login` again"
            ),
        ),
        Code::PermissionDenied => CliError::new(
            Exit::Connection,
            format!("{what}: permission denied: {message}"),
        ),
        Code::Unavailable => CliError::new(
            Exit::Connection,
            format!("{what}: the manager is unavailable: {message}"),
        ),
        Code::Aborted => CliError::failure(format!(
            "{what}: changed concurrently: {message}; run the command again"
        )),
        Code::AlreadyExists => CliError::failure(format!(
            "{what}: {message}; change a cluster with `cluster scale`/`cluster upgrade`, or \
             delete it first"
        )),
        Code::FailedPrecondition => CliError::failure(format!("{what}: {message}")),
        code => CliError::failure(format!("{what}: {code:?}: {message}")),
    }
}

/// An error and its sources on one line: tonic hides the useful part (refused, unknown
/// issuer) in the chain.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
