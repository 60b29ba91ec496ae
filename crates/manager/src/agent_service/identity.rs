//! Who is calling: the cluster named by the agent certificate's URI SAN, and when that
//! certificate expires.
//!
//! The TLS layer has already verified the chain against the manager CA (rustls, client auth
//! optional); this module only reads the verified leaf. The identity never comes from message
//! fields.

use x509_parser::extensions::GeneralName;

/// Prefix of the URI SAN of an agent certificate (see [`crate::ca::agent_uri`]).
const URI_PREFIX: &str = "fledge://cluster/";

/// The cluster an agent certificate was issued for, and its validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// Namespace of the WorkloadCluster.
    pub namespace: String,
    /// Name of the WorkloadCluster.
    pub name: String,
    /// UID of the WorkloadCluster the certificate was issued for.
    pub uid: String,
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
}

/// Why a peer certificate names no cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The leaf certificate does not parse.
    #[error("the client certificate does not parse")]
    Parse,
    /// No `fledge://cluster/<ns>/<name>/<uid>` URI SAN.
    #[error(
        "the client certificate names no cluster (no fledge://cluster/<namespace>/<name>/<uid> URI)"
    )]
    NoClusterUri,
}

/// Splits `fledge://cluster/<ns>/<name>/<uid>` into its three non-empty parts.
pub fn parse_uri(uri: &str) -> Option<(String, String, String)> {
    let rest = uri.strip_prefix(URI_PREFIX)?;
    let mut parts = rest.split('/');
    let (ns, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || name.is_empty() || uid.is_empty() {
        return None;
    }
    Some((ns.to_string(), name.to_string(), uid.to_string()))
}

/// Reads the identity from the leaf certificate (DER) of a verified TLS peer.
///
/// # Errors
/// The certificate does not parse or has no cluster URI SAN.
pub fn from_der(der: &[u8]) -> Result<AgentIdentity, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::Parse)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::Parse)?
        .ok_or(IdentityError::NoClusterUri)?;
    let (namespace, name, uid) = san
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => parse_uri(uri),
            _ => None,
        })
        .ok_or(IdentityError::NoClusterUri)?;
    let validity = cert.validity();
    Ok(AgentIdentity {
        namespace,
        name,
        uid,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_needs_exactly_three_non_empty_parts() {
        assert_eq!(
            parse_uri("fledge://cluster/team-a/edge-1/u-1"),
            Some(("team-a".into(), "edge-1".into(), "u-1".into()))
        );
        for bad in [
            "fledge://cluster/team-a/edge-1",
            "fledge://cluster/team-a/edge-1/u/x",
            "fledge://cluster//edge-1/u",
            "https://cluster/team-a/edge-1/u",
        ] {
            assert_eq!(parse_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn identity_comes_from_the_certificate() {
        let (ca, _) = crate::ca::Ca::generate().expect("CA");
        let issued = ca.issue_agent("team-a", "edge-1", "uid-1").expect("agent");
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes()).expect("pem");
        let id = from_der(&pem.contents).expect("identity");
        assert_eq!(
            (id.namespace.as_str(), id.name.as_str(), id.uid.as_str()),
            ("team-a", "edge-1", "uid-1")
        );
        assert!(id.not_after > id.not_before);
        let server = ca.issue_server(&["localhost"]).expect("server");
        let (_, pem) = x509_parser::pem::parse_x509_pem(server.cert_pem.as_bytes()).expect("pem");
        assert_eq!(from_der(&pem.contents), Err(IdentityError::NoClusterUri));
    }
}
