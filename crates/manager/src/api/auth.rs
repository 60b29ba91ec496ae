//! Bearer-token authentication: `--tokens FILE` maps each token to a tenant, and the
//! interceptor puts the caller's [`Tenant`] into the request extensions.
//!
//! A tenant is the namespace that holds its WorkloadClusters and ClusterProfiles, so
//! tenancy is enforced by which namespace a handler addresses, never by filtering.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// A bearer token: `Debug` and `Display` print `[redacted]`, so it never reaches a log.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The authenticated caller: the namespace its objects live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

/// Errors of the tokens file.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `TOKEN TENANT`.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the token itself).
        reason: String,
    },
}

type Entries = Arc<Vec<([u8; 32], Tenant)>>;

/// Tokens and their tenants. Only SHA-256 digests of the tokens are kept, and lookups
/// compare every digest in constant time, so neither memory dumps nor timing reveal a token.
///
/// Two sources: the fixed entries (`--tokens FILE`) and the reloadable ones
/// (`--tokens-secret`), swapped as a whole by [`Tokens::replace_dynamic`]; clones share them,
/// so the interceptor sees a reload at once.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Entries,
    dynamic: Arc<RwLock<Entries>>,
}

impl std::fmt::Debug for Tokens {
    // Digests of short tokens can be brute-forced: show only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests without an early exit.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A tenant must be usable as a namespace name (DNS-1123 label).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Tokens {
    /// Parses the tokens file format: one `TOKEN TENANT` pair per line, `#` comments and
    /// blank lines ignored.
    ///
    /// # Errors
    /// A malformed line, an invalid tenant name or a duplicate token, with its line number.
    pub fn parse(path: &str, text: &str) -> Result<Self, TokensError> {
        let mut entries: Vec<([u8; 32], Tenant)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_err = |reason: &str| TokensError::Line {
                path: path.to_string(),
                line: index + 1,
                reason: reason.to_string(),
            };
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, tenant] = fields.as_slice() else {
                return Err(line_err("expected `TOKEN TENANT`"));
            };
            if !is_dns_label(tenant) {
                return Err(line_err(&format!(
                    "tenant {tenant:?} is not a valid namespace name"
                )));
            }
            let hash = digest(token);
            if entries.iter().any(|(h, _)| digests_equal(h, &hash)) {
                return Err(line_err("duplicate token"));
            }
            entries.push((hash, Tenant((*tenant).to_string())));
        }
        Ok(Self {
            entries: Arc::new(entries),
            dynamic: Arc::default(),
        })
    }

    fn dynamic(&self) -> Entries {
        // A poisoned lock still holds a whole list: swaps are single assignments.
        self.dynamic
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the reloadable tokens with those of `other` (its fixed entries), keeping the
    /// fixed ones of `self`. Every clone of `self` sees the new set.
    pub fn replace_dynamic(&self, other: &Tokens) {
        *self.dynamic.write().unwrap_or_else(PoisonError::into_inner) = other.entries.clone();
    }

    /// Reads and parses a tokens file.
    ///
    /// # Errors
    /// See [`Tokens::parse`].
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Number of configured tokens.
    pub fn len(&self) -> usize {
        self.entries.len() + self.dynamic().len()
    }

    /// The tenant of `token`, if any.
    pub fn tenant_of(&self, token: &Token) -> Option<Tenant> {
        let hash = digest(&token.0);
        // Look at every entry even after a match, so the time taken does not depend on
        // where the token is in the file.
        let mut found = None;
        let dynamic = self.dynamic();
        for (candidate, tenant) in self.entries.iter().chain(dynamic.iter()) {
            if digests_equal(candidate, &hash) && found.is_none() {
                found = Some(tenant.clone());
            }
        }
        found
    }

    /// The interceptor: maps `authorization: Bearer <token>` to a [`Tenant`] extension.
    ///
    /// # Errors
    /// UNAUTHENTICATED for a missing, malformed or unknown token.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn authenticate(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        let value = header
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization is not a Bearer token"))?;
        let tenant = self
            .tenant_of(&Token(token.trim().to_string()))
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        request.extensions_mut().insert(tenant);
        Ok(request)
    }
}

/// Key of the tokens in the Secret of `--tokens-secret` (same format as the file).
pub const TOKENS_SECRET_KEY: &str = "tokens";

/// Keeps the reloadable tokens of `tokens` equal to the Secret `namespace/name` (key
/// [`TOKENS_SECRET_KEY`]) until the watch stream ends (never, with the watcher's backoff).
///
/// A Secret that does not parse keeps the previous tokens (and logs the line number, never a
/// token); a deleted Secret or a missing key removes them.
pub async fn watch_secret(client: kube::Client, namespace: String, name: String, tokens: Tokens) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Secret;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: kube::Api<Secret> = kube::Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let source = format!("Secret {namespace}/{name}");
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    // During a re-list, the Secret seen (or not) decides; a list without it clears the tokens.
    let mut seen_in_list = false;
    while let Some(event) = events.next().await {
        let secret = match event {
            // The field selector already narrows to the one Secret; the name check guards
            // against an API server that ignores it.
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                if secret.metadata.name.as_deref() != Some(name.as_str()) {
                    continue;
                }
                seen_in_list = true;
                Some(secret)
            }
            Ok(watcher::Event::Delete(secret)) => {
                if secret.metadata.name.as_deref() != Some(name.as_str()) {
                    continue;
                }
                None
            }
            Ok(watcher::Event::Init) => {
                seen_in_list = false;
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                if seen_in_list {
                    continue;
                }
                None
            }
            Err(err) => {
                tracing::warn!(%err, secret = %source, "Watching the tokens Secret");
                continue;
            }
        };
        let text = secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|data| data.get(TOKENS_SECRET_KEY))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
            .unwrap_or_default();
        match Tokens::parse(&source, &text) {
            Ok(parsed) => {
                tokens.replace_dynamic(&parsed);
                tracing::info!(secret = %source, tokens = parsed.len(), "Loaded tokens");
            }
            Err(err) => {
                tracing::warn!(%err, "Keeping the previous tokens: the tokens Secret is malformed");
            }
        }
    }
}

/// The caller's tenant, set by [`Tokens::authenticate`].
///
/// # Errors
/// UNAUTHENTICATED if the interceptor did not run (a wiring bug, never a client error).
#[allow(clippy::result_large_err)]
pub fn tenant<T>(request: &Request<T>) -> Result<Tenant, Status> {
    request
        .extensions()
        .get::<Tenant>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated tenant"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_maps_tokens_to_tenants() {
        let tokens = Tokens::parse(
            "tokens",
            "# comment\n\nsecret-a team-a\nsecret-b team-b # trailing\n",
        )
        .expect("parses");
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            tokens.tenant_of(&Token("secret-b".into())),
            Some(Tenant("team-b".into()))
        );
        assert_eq!(tokens.tenant_of(&Token("nope".into())), None);
        assert_eq!(format!("{:?}", Token("secret-a".into())), "[redacted]");
        assert_eq!(format!("{tokens:?}"), "Tokens { len: 2, .. }");
    }

    #[test]
    fn bad_lines_are_reported_with_their_number_and_without_the_token() {
        for (text, want) in [
            ("only-one-field\n", "tokens:1: expected `TOKEN TENANT`"),
            ("a team-a\nb Team_B\n", "tokens:2: tenant \"Team_B\""),
            ("a team-a\na team-b\n", "tokens:2: duplicate token"),
        ] {
            let err = Tokens::parse("tokens", text).expect_err(text).to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn reloadable_tokens_are_seen_by_every_clone() {
        let tokens = Tokens::parse("file", "fixed team-a\n").expect("parses");
        let interceptor = tokens.clone();
        let secret = Tokens::parse("secret", "dynamic team-b\n").expect("parses");
        tokens.replace_dynamic(&secret);
        assert_eq!(
            interceptor.tenant_of(&Token("dynamic".into())),
            Some(Tenant("team-b".into()))
        );
        assert_eq!(interceptor.len(), 2);
        tokens.replace_dynamic(&Tokens::default());
        assert_eq!(interceptor.tenant_of(&Token("dynamic".into())), None);
        assert_eq!(
            interceptor.tenant_of(&Token("fixed".into())),
            Some(Tenant("team-a".into()))
        );
    }

    #[test]
    fn interceptor_rejects_missing_and_unknown_tokens() {
        let tokens = Tokens::parse("t", "good team-a\n").expect("parses");
        let missing = tokens
            .authenticate(Request::new(()))
            .expect_err("no header");
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let mut unknown = Request::new(());
        unknown
            .metadata_mut()
            .insert("authorization", "Bearer bad".parse().expect("ascii"));
        let err = tokens.authenticate(unknown).expect_err("unknown");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut good = Request::new(());
        good.metadata_mut()
            .insert("authorization", "Bearer good".parse().expect("ascii"));
        let ok = tokens.authenticate(good).expect("good token");
        assert_eq!(tenant(&ok).expect("tenant"), Tenant("team-a".into()));
    }
}
