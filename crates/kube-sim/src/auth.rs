//! Authentication: who is calling.
//!
//! A cluster accepts three kinds of credentials, as a real API server configured by kubeadm does:
//! - the admin bearer token (user `admin`, groups `system:masters`, `system:authenticated`);
//! - ServiceAccount tokens minted by [`Authenticator::mint_service_account_token`] (the TokenRequest
//!   subresource and `kubernetes.io/service-account-token` Secrets use it);
//! - X.509 client certificates signed by the cluster CA (CN = user, O = groups), the way CAPI-style
//!   kubeconfigs authenticate.
//!
//! Authorization is not implemented: every authenticated user may do everything (RBAC objects are
//! stored, never enforced).
//!
//! ServiceAccount tokens are JWT-shaped (`header.claims.signature`, base64url without padding) and
//! signed with HMAC-SHA256 under a per-cluster key. Clients treat tokens as opaque, so a symmetric
//! signature is enough; it lets the sim verify a token without storing it. After the signature and
//! the expiry check, the token's ServiceAccount must still exist with the same uid (deleting the
//! ServiceAccount revokes its tokens), which the authenticator asks a [`ServiceAccountLookup`] (the
//! cluster's API server) about.

use std::fmt;
use std::sync::{RwLock, Weak};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The audience a token must carry to be accepted by the API server; the default of a kubeadm cluster.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The issuer written into ServiceAccount tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The user name of the admin token.
pub const ADMIN_USER: &str = "admin";

/// The group every authenticated user belongs to.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The group of cluster administrators (bound to cluster-admin in a real cluster).
pub const MASTERS_GROUP: &str = "system:masters";

/// The authenticated caller of a request, as the API server sees it (Kubernetes' `user.Info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name, e.g. `admin` or `system:serviceaccount:<ns>:<name>`.
    pub username: String,
    /// A unique id: the ServiceAccount's uid for ServiceAccount tokens, empty otherwise.
    pub uid: String,
    /// Group memberships, always including `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The admin user: `admin` in `system:masters`.
    pub fn admin() -> Self {
        UserInfo {
            username: ADMIN_USER.to_owned(),
            uid: String::new(),
            groups: vec![MASTERS_GROUP.to_owned(), AUTHENTICATED_GROUP.to_owned()],
        }
    }

    /// The identity of a ServiceAccount, as its tokens authenticate.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.to_owned(),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED_GROUP.to_owned(),
            ],
        }
    }
}

/// Answers whether a ServiceAccount exists, and with which uid; implemented by the API server.
pub trait ServiceAccountLookup: Send + Sync {
    /// The uid of the ServiceAccount `namespace/name`, or `None` if it does not exist.
    fn service_account_uid(&self, namespace: &str, name: &str) -> Option<String>;
}

/// The claims of a ServiceAccount token (a subset of what kube-apiserver writes).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
}

#[derive(Debug, Serialize, Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: ServiceAccountClaim,
}

#[derive(Debug, Serialize, Deserialize)]
struct ServiceAccountClaim {
    name: String,
    uid: String,
}

/// Errors creating an [`Authenticator`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The system random number generator failed.
    #[error("generating random credentials failed")]
    Random,
    /// A ServiceAccount token's claims could not be serialized.
    #[error("encoding service account token claims: {0}")]
    EncodeClaims(#[source] serde_json::Error),
}

/// Decides who is calling, from a bearer token or a verified client certificate. One per cluster.
pub struct Authenticator {
    admin_token: String,
    signing_key: hmac::Key,
    /// Set once the cluster's API server exists (it is built after the authenticator, which it holds).
    service_accounts: RwLock<Option<Weak<dyn ServiceAccountLookup>>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("admin_token", &"[redacted]")
            .field("signing_key", &"[redacted]")
            .finish()
    }
}

impl Authenticator {
    /// An authenticator with the given admin token and ServiceAccount token signing key.
    pub fn new(admin_token: impl Into<String>, signing_key: &[u8]) -> Self {
        Authenticator {
            admin_token: admin_token.into(),
            signing_key: hmac::Key::new(hmac::HMAC_SHA256, signing_key),
            service_accounts: RwLock::new(None),
        }
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Connects the authenticator to the cluster's ServiceAccounts, so that tokens of deleted
    /// ServiceAccounts are rejected. Until this is called, ServiceAccount tokens are checked only
    /// by signature and expiry.
    pub fn bind_service_accounts(&self, lookup: Weak<dyn ServiceAccountLookup>) {
        // A poisoned lock only means a panicking writer; the Option inside is still valid.
        let mut guard = self
            .service_accounts
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = Some(lookup);
    }

    /// Mints a token for the ServiceAccount `namespace/name` with the given uid.
    ///
    /// Empty `audiences` means the API server's own audience ([`API_AUDIENCE`]); `expiry: None`
    /// gives a token that never expires (the legacy Secret-based tokens).
    ///
    /// # Errors
    /// Only if the claims cannot be serialized, which does not happen for valid UTF-8 input.
    pub fn mint_service_account_token(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        expiry: Option<DateTime<Utc>>,
    ) -> Result<String, AuthError> {
        let audiences = if audiences.is_empty() {
            vec![API_AUDIENCE.to_owned()]
        } else {
            audiences.to_vec()
        };
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: format!("system:serviceaccount:{namespace}:{name}"),
            aud: audiences,
            iat: Utc::now().timestamp(),
            exp: expiry.map(|at| at.timestamp()),
            kubernetes: KubernetesClaims {
                namespace: namespace.to_owned(),
                serviceaccount: ServiceAccountClaim {
                    name: name.to_owned(),
                    uid: uid.to_owned(),
                },
            },
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).map_err(AuthError::EncodeClaims)?);
        let signed = format!("{header}.{claims}");
        let signature = hmac::sign(&self.signing_key, signed.as_bytes());
        Ok(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// Authenticates a request from its bearer token (the value after `Bearer `) and the client
    /// certificate the TLS layer verified against the cluster CA.
    ///
    /// As in kube-apiserver, the x509 authenticator runs before the token authenticators and the
    /// first success wins: a client certificate authenticates even next to a bad token.
    /// `None` means unauthenticated: the caller answers 401.
    ///
    /// # Caveats
    /// `client_cert_der` must come from a TLS session whose verifier checked it against the cluster
    /// CA: this function only reads the subject.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        client_cert_der: Option<&[u8]>,
    ) -> Option<UserInfo> {
        client_cert_der
            .and_then(user_from_certificate)
            .or_else(|| bearer.and_then(|token| self.authenticate_token(token)))
    }

    fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
            return Some(UserInfo::admin());
        }
        let claims = self.verify_service_account_token(token)?;
        let namespace = claims.kubernetes.namespace;
        let name = claims.kubernetes.serviceaccount.name;
        let uid = claims.kubernetes.serviceaccount.uid;
        let lookup = self
            .service_accounts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(lookup) = lookup {
            // A dropped API server knows no ServiceAccounts at all.
            let current = lookup.upgrade()?.service_account_uid(&namespace, &name)?;
            if current != uid {
                return None;
            }
        }
        Some(UserInfo::service_account(&namespace, &name, &uid))
    }

    fn verify_service_account_token(&self, token: &str) -> Option<Claims> {
        let (signed, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.signing_key, signed.as_bytes(), &signature).ok()?;
        let (_header, claims) = signed.split_once('.')?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        if claims.exp.is_some_and(|exp| exp <= Utc::now().timestamp()) {
            return None;
        }
        if !claims.aud.iter().any(|aud| aud == API_AUDIENCE) {
            return None;
        }
        Some(claims)
    }
}

/// Reads the user (CN) and groups (O) of a client certificate, as kube-apiserver's x509 authenticator.
fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let username = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    if username.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|org| org.as_str().ok().map(str::to_owned))
        .collect();
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    Some(UserInfo {
        username,
        uid: String::new(),
        groups,
    })
}

/// Compares without an early exit, so response timing does not reveal a token prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    struct Accounts(Vec<(&'static str, &'static str, &'static str)>);

    impl ServiceAccountLookup for Accounts {
        fn service_account_uid(&self, namespace: &str, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(ns, n, _)| *ns == namespace && *n == name)
                .map(|(_, _, uid)| (*uid).to_owned())
        }
    }

    fn authenticator() -> Authenticator {
        Authenticator::new("admin-token", b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn admin_token_authenticates_as_admin() {
        let auth = authenticator();
        assert_eq!(
            auth.authenticate(Some("admin-token"), None),
            Some(UserInfo::admin())
        );
        assert_eq!(auth.authenticate(Some("admin-tokem"), None), None);
        assert_eq!(auth.authenticate(None, None), None);
    }

    #[test]
    fn service_account_token_authenticates_while_the_account_exists() {
        let auth = authenticator();
        let accounts: Arc<dyn ServiceAccountLookup> =
            Arc::new(Accounts(vec![("ns1", "robot", "uid-1")]));
        auth.bind_service_accounts(Arc::downgrade(&accounts));
        let token = auth
            .mint_service_account_token("ns1", "robot", "uid-1", &[], None)
            .unwrap();
        assert_eq!(token.split('.').count(), 3, "JWT-shaped: {token}");
        let user = auth.authenticate(Some(&token), None).unwrap();
        assert_eq!(user.username, "system:serviceaccount:ns1:robot");
        assert_eq!(user.uid, "uid-1");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );

        // Same name, new uid: the account was deleted and recreated, so the old token is revoked.
        let recreated = auth
            .mint_service_account_token("ns1", "robot", "uid-0", &[], None)
            .unwrap();
        assert_eq!(auth.authenticate(Some(&recreated), None), None);
        let missing = auth
            .mint_service_account_token("ns1", "gone", "uid-1", &[], None)
            .unwrap();
        assert_eq!(auth.authenticate(Some(&missing), None), None);
    }

    #[test]
    fn rejects_expired_foreign_and_tampered_tokens() {
        let auth = authenticator();
        let expired = auth
            .mint_service_account_token(
                "ns1",
                "robot",
                "uid-1",
                &[],
                Some(Utc::now() - chrono::Duration::seconds(5)),
            )
            .unwrap();
        assert_eq!(auth.authenticate(Some(&expired), None), None);

        let other = Authenticator::new("other", b"another key of sufficient length!");
        let foreign = other
            .mint_service_account_token("ns1", "robot", "uid-1", &[], None)
            .unwrap();
        assert_eq!(auth.authenticate(Some(&foreign), None), None);

        let good = auth
            .mint_service_account_token("ns1", "robot", "uid-1", &[], None)
            .unwrap();
        let mut tampered = good.clone().into_bytes();
        let middle = good.find('.').unwrap() + 3;
        tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(auth.authenticate(Some(&tampered), None), None);
        assert!(auth.authenticate(Some(&good), None).is_some());

        let other_audience = auth
            .mint_service_account_token("ns1", "robot", "uid-1", &["vault".to_owned()], None)
            .unwrap();
        assert_eq!(auth.authenticate(Some(&other_audience), None), None);
    }

    #[test]
    fn client_certificate_subject_gives_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jane");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "devs");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = authenticator()
            .authenticate(None, Some(cert.der()))
            .unwrap();
        assert_eq!(user.username, "jane");
        assert_eq!(user.groups, ["devs", "system:authenticated"]);
        // The certificate wins over a bad token, as kube-apiserver's x509 authenticator runs first.
        let with_bad_token = authenticator()
            .authenticate(Some("wrong"), Some(cert.der()))
            .unwrap();
        assert_eq!(with_bad_token.username, "jane");
    }
}
