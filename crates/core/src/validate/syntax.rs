//! Syntax checks shared by the cluster and profile rules, following the definitions in
//! `k8s.io/apimachinery/pkg/util/validation` so that what we accept the API server accepts too.
//!
//! Each check returns `Err(reason)` with a reason in the shape of the rest of this module
//! (lowercase, no trailing period, the offending value quoted at the end).

use std::net::IpAddr;

/// Longest DNS-1123 label (RFC 1123, and Kubernetes' `DNS1123LabelMaxLength`).
const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain (Kubernetes' `DNS1123SubdomainMaxLength`).
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest name part of a qualified name and longest label value (Kubernetes' `LabelValueMaxLength`).
const QUALIFIED_NAME_MAX: usize = 63;

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, the body of a DNS-1123 label without the length limit.
fn is_label_body(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: the name part of a qualified name, and a
/// non-empty label value.
fn is_qualified_body(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first)
                && alnum(last)
                && bytes
                    .iter()
                    .all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A DNS-1123 label: what Kubernetes requires of namespaces and of names that end up in
/// label values or host names.
pub(crate) fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be at most {DNS1123_LABEL_MAX} characters (a DNS-1123 label), got {}",
            s.len()
        ));
    }
    if !is_label_body(s) {
        return Err(format!(
            "must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending \
             with a letter or digit), got {s:?}"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: what Kubernetes requires of most object names.
pub(crate) fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "must be at most {DNS1123_SUBDOMAIN_MAX} characters (a DNS-1123 subdomain), got {}",
            s.len()
        ));
    }
    if !s.split('.').all(is_label_body) {
        return Err(format!(
            "must be a DNS-1123 subdomain (dot-separated lowercase labels of letters, digits \
             and '-'), got {s:?}"
        ));
    }
    Ok(())
}

/// A qualified name (`[prefix/]name`), the syntax of label, annotation and taint keys.
pub(crate) fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || dns1123_subdomain(prefix).is_err())
    {
        return Err(format!(
            "must be a qualified name: the prefix before '/' must be a DNS-1123 subdomain, got {s:?}"
        ));
    }
    if name.len() > QUALIFIED_NAME_MAX || !is_qualified_body(name) {
        return Err(format!(
            "must be a qualified name ([prefix/]name, the name at most {QUALIFIED_NAME_MAX} \
             alphanumerics, '-', '_' or '.', starting and ending alphanumeric), got {s:?}"
        ));
    }
    Ok(())
}

/// A label value (also the syntax of taint values); the empty string is allowed.
pub(crate) fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > QUALIFIED_NAME_MAX || !is_qualified_body(s) {
        return Err(format!(
            "must be a label value (at most {QUALIFIED_NAME_MAX} alphanumerics, '-', '_' or '.', \
             starting and ending alphanumeric), got {s:?}"
        ));
    }
    Ok(())
}

/// A host: an IP address or a DNS-1123 subdomain.
pub(crate) fn host(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if dns1123_subdomain(s).is_err() {
        return Err(format!(
            "must be an IP address or a DNS name (lowercase), got {s:?}"
        ));
    }
    Ok(())
}

/// An `http://`, `https://` or `oci://` URL with a host, as Flux's `HelmRepository` accepts.
/// Hand-rolled on purpose: core has no URL parser and only the scheme and host matter here.
pub(crate) fn chart_repository_url(s: &str) -> Result<(), String> {
    let rest = ["https://", "http://", "oci://"]
        .iter()
        .find_map(|scheme| s.strip_prefix(scheme));
    let Some(rest) = rest else {
        return Err(format!("must be an http(s):// or oci:// URL, got {s:?}"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Drop userinfo and port; what is left must be a host name or an IP address.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host_only = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host_only.is_empty()
        || s.chars().any(char::is_whitespace)
        || (host_only.parse::<IpAddr>().is_err()
            && !host_only.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
    {
        return Err(format!("must be a URL with a valid host, got {s:?}"));
    }
    Ok(())
}

/// An OpenSSH public key line (`<type> <base64> [comment]`) of a type OpenSSH accepts.
pub(crate) fn ssh_public_key(s: &str) -> Result<(), String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut fields = s.split_whitespace();
    let key_type = fields.next().unwrap_or_default();
    let body = fields.next().unwrap_or_default();
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if !TYPES.contains(&key_type) || body.is_empty() || !body.bytes().all(base64) {
        return Err(format!(
            "must be an OpenSSH public key (\"ssh-ed25519 AAAA... comment\"), got {:?}",
            abbreviate(s)
        ));
    }
    Ok(())
}

/// A vCenter TLS thumbprint: the SHA-1 (20 bytes) or SHA-256 (32 bytes) fingerprint as
/// colon-separated hex pairs, the form `govc about.cert -thumbprint` prints.
pub(crate) fn thumbprint(s: &str) -> Result<(), String> {
    let pairs: Vec<&str> = s.split(':').collect();
    let hex_pairs = pairs
        .iter()
        .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !hex_pairs || !(pairs.len() == 20 || pairs.len() == 32) {
        return Err(format!(
            "must be a SHA-1 or SHA-256 fingerprint as colon-separated hex pairs, got {s:?}"
        ));
    }
    Ok(())
}

/// Shortens long values (keys, manifests) so that one error does not flood a terminal.
pub(crate) fn abbreviate(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let head: String = s.chars().take(MAX).collect();
    format!("{head}...")
}
