//! Certificates and TLS for one cluster: its CA, the API server's serving certificate, client
//! certificates, and the rustls server configuration.
//!
//! Keys are ECDSA P-256, as rcgen generates by default. The CA is what a kubeconfig's
//! `certificate-authority-data` carries; client certificates follow kube-apiserver's x509
//! convention (CN = user name, O = groups).

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Subject alternative names of every serving certificate: loopback by address and name, and the
/// in-cluster names of the `kubernetes` Service (so in-cluster clients can verify too).
pub const SERVER_SANS: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The OID of the X.509 `organizationName` attribute (2.5.4.10).
const ORGANIZATION_OID: &[u64] = &[2, 5, 4, 10];

/// Errors creating certificates or TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating a key or a certificate failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// Reading or writing a PKI file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A persisted CA certificate or key does not parse.
    #[error("loading the CA from {path}: {source}")]
    LoadCa {
        /// The file that did not parse.
        path: PathBuf,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// rustls rejected the configuration.
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("building the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rcgen writes one attribute per type in a subject, plus one more through a custom OID, so a
    /// client certificate can carry at most two groups.
    #[error("a client certificate carries at most 2 groups, got {0}")]
    TooManyGroups(usize),
}

/// A certificate and its private key, both PEM. `Debug` does not print the key.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// A cluster's certificate authority: signs the serving certificate and client certificates.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl ClusterCa {
    /// A new self-signed CA, valid for ten years, named like kubeadm's (`CN=kubernetes`).
    ///
    /// # Errors
    /// If key or certificate generation fails.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(|source| TlsError::Generate {
            what: "the CA key",
            source,
        })?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, 3650);
        let cert = params
            .self_signed(&key)
            .map_err(|source| TlsError::Generate {
                what: "the CA certificate",
                source,
            })?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        Ok(ClusterCa {
            cert_pem,
            cert_der,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA from `dir/ca.crt` and `dir/ca.key`, or generates one and writes it there
    /// (the key with mode 0600), so that a restarted sim keeps its CA.
    ///
    /// # Errors
    /// If the files exist but do not parse, or cannot be read or written.
    pub fn load_or_generate(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if cert_path.exists() && key_path.exists() {
            let cert_pem = read(&cert_path)?;
            let key_pem = read(&key_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|source| TlsError::LoadCa {
                path: key_path.clone(),
                source,
            })?;
            let issuer =
                Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| TlsError::LoadCa {
                    path: cert_path.clone(),
                    source,
                })?;
            let cert_der = first_certificate_der(&cert_pem).ok_or_else(|| TlsError::LoadCa {
                path: cert_path.clone(),
                source: rcgen::Error::CouldNotParseCertificate,
            })?;
            return Ok(ClusterCa {
                cert_pem,
                cert_der,
                issuer,
            });
        }
        let ca = ClusterCa::generate()?;
        write_private(&key_path, ca.issuer.key().serialize_pem().as_bytes())?;
        write_private(&cert_path, ca.cert_pem.as_bytes())?;
        Ok(ca)
    }

    /// The CA certificate, PEM (what `certificate-authority-data` holds, base64-encoded).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A serving certificate for [`SERVER_SANS`], valid for a year.
    ///
    /// # Errors
    /// If key or certificate generation fails.
    pub fn issue_server_cert(&self) -> Result<CertifiedKey, TlsError> {
        let sans: Vec<String> = SERVER_SANS.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).map_err(|source| TlsError::Generate {
            what: "the serving certificate",
            source,
        })?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, 365);
        self.sign(&params, "the serving certificate")
    }

    /// A client certificate for `user` in `groups` (CN = user, O = each group), valid for a year.
    ///
    /// # Errors
    /// [`TlsError::TooManyGroups`] for more than two groups, or if generation fails.
    pub fn issue_client_cert(
        &self,
        user: &str,
        groups: &[String],
    ) -> Result<CertifiedKey, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, user);
        match groups {
            [] => {}
            [first] => params
                .distinguished_name
                .push(DnType::OrganizationName, first.as_str()),
            [first, second] => {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, first.as_str());
                // rcgen keys subject attributes by type; a custom type with the same OID is
                // the only way to get a second O attribute.
                params.distinguished_name.push(
                    DnType::CustomDnType(ORGANIZATION_OID.to_vec()),
                    second.as_str(),
                );
            }
            more => return Err(TlsError::TooManyGroups(more.len())),
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, 365);
        self.sign(&params, "a client certificate")
    }

    fn sign(
        &self,
        params: &CertificateParams,
        what: &'static str,
    ) -> Result<CertifiedKey, TlsError> {
        let key = KeyPair::generate().map_err(|source| TlsError::Generate { what, source })?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| TlsError::Generate { what, source })?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The rustls configuration of the cluster's API server: `serving` as the certificate, ALPN
    /// `h2` and `http/1.1`, and client certificates *requested but optional*: a presented one must
    /// chain to this CA (otherwise the handshake fails), a missing one leaves authentication to
    /// bearer tokens.
    ///
    /// # Errors
    /// If the serving certificate does not parse or rustls rejects the configuration.
    pub fn server_config(
        &self,
        serving: &CertifiedKey,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let cert_der = first_certificate_der(&serving.cert_pem).ok_or(TlsError::Rustls(
            rustls::Error::General("the serving certificate does not parse".to_owned()),
        ))?;
        let key_der = private_key_der(&serving.key_pem).ok_or(TlsError::Rustls(
            rustls::Error::General("the serving key does not parse".to_owned()),
        ))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert_der], key_der)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Validity from a day ago (tolerating clock skew between the sim and its clients) for `days`.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let from = Utc::now() - Duration::days(1);
    let to = Utc::now() + Duration::days(days);
    // Day precision is enough; month and day always fit in u8.
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
}

/// The DER of the first certificate in a PEM bundle.
fn first_certificate_der(pem: &str) -> Option<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(Result::ok)
}

/// The DER of the first private key in a PEM document.
fn private_key_der(pem: &str) -> Option<PrivateKeyDer<'static>> {
    match rustls_pemfile::private_key(&mut pem.as_bytes()) {
        Ok(Some(key)) => Some(key),
        _ => None,
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file only its owner can read, through a temporary file and a rename so that a crash
/// never leaves half a key behind.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;

    #[test]
    fn ca_persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterCa::load_or_generate(dir.path()).unwrap();
        let second = ClusterCa::load_or_generate(dir.path()).unwrap();
        assert_eq!(first.cert_pem(), second.cert_pem());
        // The reloaded CA can still sign: its certificates name the same issuer.
        let cert = second.issue_client_cert("jane", &[]).unwrap();
        let der = first_certificate_der(&cert.cert_pem).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(first.cert_der()).unwrap();
        assert_eq!(parsed.issuer(), ca.subject());
        assert!(parsed.verify_signature(Some(ca.public_key())).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn client_certificates_carry_user_and_up_to_two_groups() {
        let ca = ClusterCa::generate().unwrap();
        let groups = vec!["system:masters".to_owned(), "devs".to_owned()];
        let cert = ca.issue_client_cert("jane", &groups).unwrap();
        let der = first_certificate_der(&cert.cert_pem).unwrap();
        let user = Authenticator::new("t", b"k")
            .authenticate(None, Some(&der))
            .unwrap();
        assert_eq!(user.username, "jane");
        assert_eq!(
            user.groups,
            ["system:masters", "devs", "system:authenticated"]
        );
        let three = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert!(matches!(
            ca.issue_client_cert("jane", &three),
            Err(TlsError::TooManyGroups(3))
        ));
    }

    #[test]
    fn server_config_offers_h2_and_http1() {
        let ca = ClusterCa::generate().unwrap();
        let serving = ca.issue_server_cert().unwrap();
        let config = ca.server_config(&serving).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
