//! The manager's small certificate authority (ECDSA P-256, `rcgen`).
//!
//! One CA signs the gRPC server certificate and, later, every agent's client certificate. An
//! agent certificate names its cluster in a URI SAN (`fledge://cluster/<ns>/<name>/<uid>`), so
//! the AgentService can tell from the TLS peer alone which cluster is calling.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::tls::Pem;

/// Validity of the CA: long, because rotating it means re-issuing every agent certificate.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of the server certificate.
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Validity of an agent's client certificate; the agent rotates it well before expiry.
pub const AGENT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen failed to build, parse or sign a certificate.
    #[error("{what}: {source}")]
    Rcgen {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Rcgen { what, source }
}

/// A certificate with its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM), redacted in `Debug`.
    pub key_pem: Pem,
}

/// A CA able to issue server and agent certificates.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("key", &"[redacted]").finish()
    }
}

/// Lengths below this start "now" rather than at midnight (see [`validity`]).
const SHORT_VALIDITY: Duration = Duration::from_secs(2 * 24 * 3600);
/// How far back a short-lived certificate starts, to absorb small clock skew.
const SHORT_BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The validity window starting today (midnight UTC, so that clock skew of a few hours between
/// the manager and an agent does not make a fresh certificate "not yet valid"). Short windows
/// (tests, aggressive rotation) would already be over if they started at midnight, so they
/// start a few minutes ago instead.
fn validity(params: &mut CertificateParams, length: Duration) {
    use chrono::Datelike;
    if length < SHORT_VALIDITY {
        let now = std::time::SystemTime::now();
        let start = now.checked_sub(SHORT_BACKDATE).unwrap_or(now);
        params.not_before = start.into();
        params.not_after = (now + length).into();
        return;
    }
    let today = chrono::Utc::now().date_naive();
    let month = u8::try_from(today.month()).unwrap_or(1);
    let day = u8::try_from(today.day()).unwrap_or(1);
    params.not_before = rcgen::date_time_ymd(today.year(), month, day);
    params.not_after = params.not_before + length;
}

impl Ca {
    /// Creates a new self-signed CA.
    ///
    /// # Errors
    /// Key generation or signing failed.
    pub fn generate() -> Result<(Self, Issued), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_err("generating the CA key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("CA parameters"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "fledge-manager CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY);
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("self-signing the CA"))?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: Pem(key.serialize_pem()),
        };
        let ca = Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, issued))
    }

    /// Loads a CA from its certificate and key (PEM).
    ///
    /// # Errors
    /// The key or the certificate does not parse.
    pub fn load(cert_pem: &str, key_pem: &Pem) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&key_pem.0).map_err(rcgen_err("parsing the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(rcgen_err("parsing the CA certificate"))?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    /// The CA certificate (PEM), the trust root clients and agents need.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a TLS server certificate for `names` (IP addresses or DNS names).
    ///
    /// # Errors
    /// A name is not a valid SAN, or signing failed.
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, CaError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(rcgen_err("server SANs"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "fledge-manager");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, SERVER_VALIDITY);
        self.sign(&params, "signing the server certificate")
    }

    /// Issues an agent's client certificate naming its cluster in the URI SAN
    /// `fledge://cluster/<namespace>/<name>/<uid>` (see [`agent_uri`]).
    ///
    /// # Errors
    /// The URI is not a valid SAN, or signing failed.
    pub fn issue_agent(&self, namespace: &str, name: &str, uid: &str) -> Result<Issued, CaError> {
        self.issue_agent_valid_for(namespace, name, uid, AGENT_VALIDITY)
    }

    /// Like [`Ca::issue_agent`] with a chosen validity (`serve --agent-cert-validity`).
    ///
    /// # Errors
    /// The URI is not a valid SAN, or signing failed.
    pub fn issue_agent_valid_for(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        length: Duration,
    ) -> Result<Issued, CaError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("agent parameters"))?;
        let uri = agent_uri(namespace, name, uid);
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into().map_err(rcgen_err("agent URI SAN"))?,
        )];
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("fledge-agent {namespace}/{name}"),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, length);
        self.sign(&params, "signing the agent certificate")
    }

    fn sign(&self, params: &CertificateParams, what: &'static str) -> Result<Issued, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_err("generating a key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_err(what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Pem(key.serialize_pem()),
        })
    }
}

/// The URI SAN naming a cluster's agent.
pub fn agent_uri(namespace: &str, name: &str, uid: &str) -> String {
    format!("fledge://cluster/{namespace}/{name}/{uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_certificate_names_its_cluster_and_is_signed_by_the_ca() {
        let (ca, ca_files) = Ca::generate().expect("CA");
        let agent = ca
            .issue_agent("team-a", "edge-1", "1234-abcd")
            .expect("agent cert");
        let (_, pem) = x509_parser::pem::parse_x509_pem(agent.cert_pem.as_bytes()).expect("pem");
        let cert = pem.parse_x509().expect("x509");
        let uris: Vec<String> = cert
            .subject_alternative_name()
            .expect("SAN extension parses")
            .expect("has SANs")
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(cert.issuer().to_string(), "CN=fledge-manager CA");
        assert_eq!(uris, ["fledge://cluster/team-a/edge-1/1234-abcd"]);
        // Reloading the CA from its files signs with the same issuer name.
        let reloaded = Ca::load(&ca_files.cert_pem, &ca_files.key_pem).expect("reload");
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        let again = reloaded
            .issue_agent("team-a", "edge-1", "u")
            .expect("agent cert");
        assert!(again.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{:?}", again.key_pem).contains("PRIVATE"));
    }
}
