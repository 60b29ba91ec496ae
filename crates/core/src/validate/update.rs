//! Day-2 rules: what may change between the stored spec and a new one.

use std::fmt::Display;

use ipnet::IpNet;

use super::FieldError;
use super::cluster::{control_plane_replicas, push};
use crate::spec::WorkloadClusterSpec;

/// kubeadm's default service domain, what an absent `serviceDomain` means.
const DEFAULT_SERVICE_DOMAIN: &str = "cluster.local";

pub(crate) fn check(
    old: &WorkloadClusterSpec,
    new: &WorkloadClusterSpec,
    errors: &mut Vec<FieldError>,
) {
    check_version(&old.kubernetes_version, &new.kubernetes_version, errors);

    match (&old.infrastructure.vsphere, &new.infrastructure.vsphere) {
        (Some(old_vsphere), Some(new_vsphere)) => {
            let base = "spec.infrastructure.vsphere";
            // Machines already running stay where they are; CAPV cannot move them to another
            // vCenter or datacenter, nor reconcile them with another account's view.
            immutable(
                errors,
                &format!("{base}.server"),
                &old_vsphere.server,
                &new_vsphere.server,
            );
            immutable(
                errors,
                &format!("{base}.datacenter"),
                &old_vsphere.datacenter,
                &new_vsphere.datacenter,
            );
            immutable(
                errors,
                &format!("{base}.credentialsSecret"),
                &old_vsphere.credentials_secret,
                &new_vsphere.credentials_secret,
            );
        }
        (None, None) => {}
        _ => errors.push(FieldError::new(
            "spec.infrastructure.vsphere",
            "the infrastructure provider is immutable",
        )),
    }

    // The CIDRs are in every node's kubelet and CNI configuration and the endpoint is in
    // every certificate and kubeconfig; changing them means a new cluster.
    immutable_cidr(
        errors,
        "spec.network.pods",
        &old.network.pods,
        &new.network.pods,
    );
    immutable_cidr(
        errors,
        "spec.network.services",
        &old.network.services,
        &new.network.services,
    );
    immutable(
        errors,
        "spec.network.serviceDomain",
        old.network
            .service_domain
            .as_deref()
            .unwrap_or(DEFAULT_SERVICE_DOMAIN),
        new.network
            .service_domain
            .as_deref()
            .unwrap_or(DEFAULT_SERVICE_DOMAIN),
    );
    immutable(
        errors,
        "spec.controlPlane.endpoint.host",
        &old.control_plane.endpoint.host,
        &new.control_plane.endpoint.host,
    );
    immutable(
        errors,
        "spec.controlPlane.endpoint.port",
        &old.control_plane.endpoint.port,
        &new.control_plane.endpoint.port,
    );

    push(
        errors,
        "spec.controlPlane.replicas",
        control_plane_replicas(new.control_plane.replicas),
    );
}

/// The Kubernetes version skew policy: kubeadm upgrades one minor version at a time and never
/// downgrades (etcd and stored objects may already be in the newer format).
fn check_version(old: &str, new: &str, errors: &mut Vec<FieldError>) {
    // A version that does not parse is reported by `validate_cluster`; an old one that does
    // not parse cannot be compared with.
    let (Some(old_version), Some(new_version)) = (release(old), release(new)) else {
        return;
    };
    let path = "spec.kubernetesVersion";
    if new_version < old_version {
        errors.push(FieldError::new(
            path,
            format!("must not downgrade from {old}, got {new}"),
        ));
    } else if new_version.0 != old_version.0 {
        errors.push(FieldError::new(
            path,
            format!(
                "must keep major version {} of {old}, got {new}",
                old_version.0
            ),
        ));
    } else if new_version.1 > old_version.1 + 1 {
        errors.push(FieldError::new(
            path,
            format!(
                "must upgrade one minor version at a time: from {old} the next is v{}.{}.x, got {new}",
                old_version.0,
                old_version.1 + 1
            ),
        ));
    }
}

/// `vX.Y.Z` as a comparable triple, ignoring build metadata.
fn release(version: &str) -> Option<(u64, u64, u64)> {
    let parsed = semver::Version::parse(version.strip_prefix('v')?).ok()?;
    parsed
        .pre
        .is_empty()
        .then_some((parsed.major, parsed.minor, parsed.patch))
}

fn immutable<T: PartialEq + Display + ?Sized>(
    errors: &mut Vec<FieldError>,
    path: &str,
    old: &T,
    new: &T,
) {
    if old != new {
        errors.push(FieldError::new(
            path,
            format!("is immutable: was {old}, got {new}"),
        ));
    }
}

/// Compares parsed networks, so that spelling differences (`::0/64` and `::/64`) do not count.
fn immutable_cidr(errors: &mut Vec<FieldError>, path: &str, old: &str, new: &str) {
    match (old.parse::<IpNet>(), new.parse::<IpNet>()) {
        (Ok(old_net), Ok(new_net)) if old_net == new_net => {}
        _ if old == new => {}
        _ => errors.push(FieldError::new(
            path,
            format!("is immutable: was {old}, got {new}"),
        )),
    }
}
