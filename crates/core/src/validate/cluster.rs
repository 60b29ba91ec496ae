//! The rules of a `WorkloadCluster`.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{FieldError, SUPPORTED_KUBERNETES_MINORS, syntax};
use crate::spec::{
    Autoscaling, CertificatesSpec, ControlPlaneSpec, MachineShape, NetworkSpec,
    VSphereInfrastructure, WorkerPool, WorkloadClusterSpec,
};

/// Control-plane sizes: odd so that etcd keeps quorum through one (or more) failures, and at
/// most 7 because etcd recommends no more members than that.
const CONTROL_PLANE_REPLICAS: [i32; 4] = [1, 3, 5, 7];
/// Largest worker pool; also the bound of autoscaling.
const MAX_WORKER_REPLICAS: i32 = 1000;
/// kubeadm's preflight wants 2 CPUs on a control-plane node, and etcd plus the API server
/// need about 4 GiB to stay out of swap and OOM trouble.
const CONTROL_PLANE_MIN_CPUS: i32 = 2;
const CONTROL_PLANE_MIN_MEMORY_MIB: i64 = 4096;
/// A worker runs kubelet, containerd, the CNI and kube-proxy before any workload.
const WORKER_MIN_CPUS: i32 = 1;
const WORKER_MIN_MEMORY_MIB: i64 = 2048;
/// The OS image plus container images; the node templates Fledge targets are 20 GiB.
const MIN_DISK_GIB: i32 = 20;
/// vSphere 8 configuration maximums for one VM: 768 vCPUs, 24 TiB memory, 62 TiB per disk.
const MAX_CPUS: i32 = 768;
const MAX_MEMORY_MIB: i64 = 24 * 1024 * 1024;
const MAX_DISK_GIB: i32 = 62 * 1024;
/// kube-apiserver refuses larger service ranges ("the mask must be >= 12" for IPv4,
/// ">= 108" for IPv6).
const MIN_SERVICE_PREFIX_V4: u8 = 12;
const MIN_SERVICE_PREFIX_V6: u8 = 108;
/// kube-controller-manager carves a /24 (IPv4) or /64 (IPv6) per node out of the pod range
/// by default, and refuses a cluster range more than 16 bits wider than the node size (IPv6).
const MAX_POD_PREFIX_V4: u8 = 24;
const POD_PREFIX_V6: std::ops::RangeInclusive<u8> = 48..=64;
/// KubeadmControlPlane's minimum for `rollout.before.certificatesExpiryDays`.
const MIN_RENEW_BEFORE_EXPIRY_DAYS: i32 = 7;

pub(crate) fn check_metadata(metadata: &ObjectMeta, errors: &mut Vec<FieldError>) {
    // The cluster name becomes the `cluster.x-k8s.io/cluster-name` label value on every CAPI
    // object and part of host names, so it must be a label, not just a subdomain.
    match metadata.name.as_deref() {
        None | Some("") => errors.push(FieldError::new("metadata.name", "required field missing")),
        Some(name) => {
            push(errors, "metadata.name", syntax::dns1123_label(name));
        }
    }
    check_common_metadata(metadata, errors);
}

/// Checks shared by both kinds: the namespace and label syntax.
pub(crate) fn check_common_metadata(metadata: &ObjectMeta, errors: &mut Vec<FieldError>) {
    if let Some(namespace) = metadata.namespace.as_deref() {
        push(
            errors,
            "metadata.namespace",
            syntax::dns1123_label(namespace),
        );
    }
    for (key, value) in metadata.labels.iter().flatten() {
        let path = format!("metadata.labels[{key}]");
        push(errors, &path, syntax::qualified_name(key));
        push(errors, &path, syntax::label_value(value));
    }
}

pub(crate) fn check_spec(spec: &WorkloadClusterSpec, errors: &mut Vec<FieldError>) {
    push(
        errors,
        "spec.kubernetesVersion",
        kubernetes_version(&spec.kubernetes_version).map(drop),
    );
    match &spec.infrastructure.vsphere {
        Some(vsphere) => check_vsphere(vsphere, errors),
        None => errors.push(FieldError::new(
            "spec.infrastructure.vsphere",
            "required field missing: exactly one infrastructure provider must be set",
        )),
    }
    check_control_plane(&spec.control_plane, errors);
    let mut pool_names = HashSet::new();
    for (index, pool) in spec.workers.iter().enumerate() {
        check_pool(
            pool,
            &format!("spec.workers[{index}]"),
            &mut pool_names,
            errors,
        );
    }
    check_network(&spec.network, &spec.control_plane.endpoint.host, errors);
    if let Some(profile) = &spec.profile {
        push(errors, "spec.profile", syntax::dns1123_subdomain(profile));
    }
    for (index, key) in spec.ssh_authorized_keys.iter().enumerate() {
        push(
            errors,
            &format!("spec.sshAuthorizedKeys[{index}]"),
            syntax::ssh_public_key(key),
        );
    }
    if let Some(certificates) = &spec.certificates {
        check_certificates(certificates, errors);
    }
}

/// Parses `vX.Y.Z` (build metadata such as `+vmware.1` allowed) and checks the window.
pub(crate) fn kubernetes_version(version: &str) -> Result<semver::Version, String> {
    let parsed = version
        .strip_prefix('v')
        .and_then(|v| semver::Version::parse(v).ok())
        .filter(|v| v.pre.is_empty())
        .ok_or_else(|| format!("must be a release version vX.Y.Z, got {version:?}"))?;
    if parsed.major != 1 || !SUPPORTED_KUBERNETES_MINORS.contains(&parsed.minor) {
        return Err(format!(
            "must be within the supported versions v1.{}.x to v1.{}.x, got {version}",
            SUPPORTED_KUBERNETES_MINORS.start(),
            SUPPORTED_KUBERNETES_MINORS.end()
        ));
    }
    Ok(parsed)
}

fn check_vsphere(vsphere: &VSphereInfrastructure, errors: &mut Vec<FieldError>) {
    let base = "spec.infrastructure.vsphere";
    push(
        errors,
        &format!("{base}.server"),
        syntax::host(&vsphere.server),
    );
    if let Some(thumbprint) = &vsphere.thumbprint {
        push(
            errors,
            &format!("{base}.thumbprint"),
            syntax::thumbprint(thumbprint),
        );
    }
    let required = [
        ("datacenter", Some(&vsphere.datacenter)),
        ("datastore", Some(&vsphere.datastore)),
        ("network", Some(&vsphere.network)),
        ("template", Some(&vsphere.template)),
        ("resourcePool", vsphere.resource_pool.as_ref()),
        ("folder", vsphere.folder.as_ref()),
    ];
    for (field, value) in required {
        if let Some(value) = value {
            push(errors, &format!("{base}.{field}"), not_blank(value));
        }
    }
    push(
        errors,
        &format!("{base}.credentialsSecret"),
        syntax::dns1123_subdomain(&vsphere.credentials_secret),
    );
}

fn check_control_plane(control_plane: &ControlPlaneSpec, errors: &mut Vec<FieldError>) {
    push(
        errors,
        "spec.controlPlane.replicas",
        control_plane_replicas(control_plane.replicas),
    );
    push(
        errors,
        "spec.controlPlane.endpoint.host",
        syntax::host(&control_plane.endpoint.host),
    );
    let port = control_plane.endpoint.port;
    if !(1..=65535).contains(&port) {
        errors.push(FieldError::new(
            "spec.controlPlane.endpoint.port",
            format!("must be between 1 and 65535, got {port}"),
        ));
    }
    check_machine(
        &control_plane.machine,
        "spec.controlPlane.machine",
        CONTROL_PLANE_MIN_CPUS,
        CONTROL_PLANE_MIN_MEMORY_MIB,
        errors,
    );
    if let Some(template) = &control_plane.template {
        push(errors, "spec.controlPlane.template", not_blank(template));
    }
}

pub(crate) fn control_plane_replicas(replicas: i32) -> Result<(), String> {
    if CONTROL_PLANE_REPLICAS.contains(&replicas) {
        Ok(())
    } else if replicas > 0 && replicas % 2 == 1 {
        Err(format!("must be at most 7 (1, 3, 5, 7), got {replicas}"))
    } else {
        Err(format!("must be odd (1, 3, 5, 7), got {replicas}"))
    }
}

fn check_machine(
    machine: &MachineShape,
    base: &str,
    min_cpus: i32,
    min_memory_mib: i64,
    errors: &mut Vec<FieldError>,
) {
    if !(min_cpus..=MAX_CPUS).contains(&machine.cpus) {
        errors.push(FieldError::new(
            format!("{base}.cpus"),
            format!(
                "must be between {min_cpus} and {MAX_CPUS}, got {}",
                machine.cpus
            ),
        ));
    }
    if !(min_memory_mib..=MAX_MEMORY_MIB).contains(&machine.memory_mib) {
        errors.push(FieldError::new(
            format!("{base}.memoryMiB"),
            format!(
                "must be between {min_memory_mib} and {MAX_MEMORY_MIB}, got {}",
                machine.memory_mib
            ),
        ));
    }
    if !(MIN_DISK_GIB..=MAX_DISK_GIB).contains(&machine.disk_gib) {
        errors.push(FieldError::new(
            format!("{base}.diskGiB"),
            format!(
                "must be between {MIN_DISK_GIB} and {MAX_DISK_GIB}, got {}",
                machine.disk_gib
            ),
        ));
    }
}

/// Pool names that would collide with names the renderer derives for the control plane.
const RESERVED_POOL_NAMES: &[&str] = &["control-plane"];

/// Rules that need the cluster's name as well as the pool's: the renderer names each
/// MachineDeployment `<cluster>-<pool>` and Cluster API copies that name into a label value,
/// which is limited to 63 characters.
pub(crate) fn check_pool_names_in_cluster(
    cluster: &str,
    spec: &WorkloadClusterSpec,
    errors: &mut Vec<FieldError>,
) {
    for (index, pool) in spec.workers.iter().enumerate() {
        let path = format!("spec.workers[{index}].name");
        if RESERVED_POOL_NAMES.contains(&pool.name.as_str()) {
            errors.push(FieldError::new(
                &path,
                format!("{:?} is reserved for the control plane", pool.name),
            ));
        }
        let combined = cluster.len() + 1 + pool.name.len();
        // An invalid cluster name is reported on its own; do not repeat it for every pool.
        if syntax::dns1123_label(cluster).is_ok() && combined > 63 {
            errors.push(FieldError::new(
                &path,
                format!(
                    "\"{cluster}-{}\" (cluster and pool name) must be at most 63 characters, got {combined}",
                    pool.name
                ),
            ));
        }
    }
}

fn check_pool<'a>(
    pool: &'a WorkerPool,
    base: &str,
    names: &mut HashSet<&'a str>,
    errors: &mut Vec<FieldError>,
) {
    let name_path = format!("{base}.name");
    match syntax::dns1123_label(&pool.name) {
        Err(reason) => errors.push(FieldError::new(&name_path, reason)),
        Ok(()) if !names.insert(&pool.name) => errors.push(FieldError::new(
            &name_path,
            format!("duplicate worker pool name {:?}", pool.name),
        )),
        Ok(()) => {}
    }
    match (pool.replicas, &pool.autoscaling) {
        (None, None) => errors.push(FieldError::new(
            format!("{base}.replicas"),
            "required field missing: set replicas or autoscaling",
        )),
        (replicas, autoscaling) => {
            if let Some(replicas) = replicas {
                push(
                    errors,
                    &format!("{base}.replicas"),
                    worker_replicas(replicas),
                );
            }
            if let Some(autoscaling) = autoscaling {
                check_autoscaling(autoscaling, replicas, base, errors);
            }
        }
    }
    check_machine(
        &pool.machine,
        &format!("{base}.machine"),
        WORKER_MIN_CPUS,
        WORKER_MIN_MEMORY_MIB,
        errors,
    );
    if let Some(template) = &pool.template {
        push(errors, &format!("{base}.template"), not_blank(template));
    }
    for (key, value) in &pool.labels {
        let path = format!("{base}.labels[{key}]");
        push(errors, &path, syntax::qualified_name(key));
        push(errors, &path, syntax::label_value(value));
    }
    for (index, taint) in pool.taints.iter().enumerate() {
        let path = format!("{base}.taints[{index}]");
        push(
            errors,
            &format!("{path}.key"),
            syntax::qualified_name(&taint.key),
        );
        if let Some(value) = &taint.value {
            push(errors, &format!("{path}.value"), syntax::label_value(value));
        }
        // The API server rejects two taints with the same key and effect on one node.
        let earlier = &pool.taints[..index];
        if earlier
            .iter()
            .any(|t| t.key == taint.key && t.effect == taint.effect)
        {
            errors.push(FieldError::new(
                format!("{path}.key"),
                format!(
                    "duplicate taint {:?} with effect {:?}",
                    taint.key, taint.effect
                ),
            ));
        }
    }
}

fn worker_replicas(replicas: i32) -> Result<(), String> {
    if (0..=MAX_WORKER_REPLICAS).contains(&replicas) {
        Ok(())
    } else {
        Err(format!(
            "must be between 0 and {MAX_WORKER_REPLICAS}, got {replicas}"
        ))
    }
}

fn check_autoscaling(
    autoscaling: &Autoscaling,
    replicas: Option<i32>,
    base: &str,
    errors: &mut Vec<FieldError>,
) {
    let (min, max) = (autoscaling.min_replicas, autoscaling.max_replicas);
    let min_path = format!("{base}.autoscaling.minReplicas");
    let max_path = format!("{base}.autoscaling.maxReplicas");
    let min_ok = push(errors, &min_path, worker_replicas(min));
    let max_ok = push(errors, &max_path, worker_replicas(max));
    if !(min_ok && max_ok) {
        return;
    }
    if min > max {
        errors.push(FieldError::new(
            &max_path,
            format!("must be at least minReplicas ({min}), got {max}"),
        ));
    } else if let Some(replicas) = replicas
        && !(min..=max).contains(&replicas)
    {
        errors.push(FieldError::new(
            format!("{base}.replicas"),
            format!("must be within autoscaling bounds {min} to {max}, got {replicas}"),
        ));
    }
}

fn check_network(network: &NetworkSpec, endpoint_host: &str, errors: &mut Vec<FieldError>) {
    let pods = match cidr(&network.pods) {
        Ok(pods) => {
            let size_ok = match pods {
                IpNet::V4(_) => pods.prefix_len() <= MAX_POD_PREFIX_V4,
                IpNet::V6(_) => POD_PREFIX_V6.contains(&pods.prefix_len()),
            };
            if size_ok {
                Some(pods)
            } else {
                let want = match pods {
                    IpNet::V4(_) => format!("/{MAX_POD_PREFIX_V4} or larger"),
                    IpNet::V6(_) => format!(
                        "between /{} and /{}",
                        POD_PREFIX_V6.start(),
                        POD_PREFIX_V6.end()
                    ),
                };
                errors.push(FieldError::new(
                    "spec.network.pods",
                    format!("must be {want} to leave room for a range per node, got {pods}"),
                ));
                None
            }
        }
        Err(reason) => {
            errors.push(FieldError::new("spec.network.pods", reason));
            None
        }
    };
    let services = match cidr(&network.services) {
        Ok(services) => {
            let min_prefix = match services {
                IpNet::V4(_) => MIN_SERVICE_PREFIX_V4,
                IpNet::V6(_) => MIN_SERVICE_PREFIX_V6,
            };
            if services.prefix_len() < min_prefix {
                errors.push(FieldError::new(
                    "spec.network.services",
                    format!(
                        "must be /{min_prefix} or smaller (a kube-apiserver limit), got {services}"
                    ),
                ));
            }
            Some(services)
        }
        Err(reason) => {
            errors.push(FieldError::new("spec.network.services", reason));
            None
        }
    };
    if let (Some(pods), Some(services)) = (pods, services) {
        if matches!(pods, IpNet::V4(_)) != matches!(services, IpNet::V4(_)) {
            errors.push(FieldError::new(
                "spec.network.services",
                format!("must be the same IP family as spec.network.pods ({pods}); dual-stack is not supported"),
            ));
        } else if overlaps(&pods, &services) {
            errors.push(FieldError::new(
                "spec.network.services",
                format!("must not overlap spec.network.pods ({pods}), got {services}"),
            ));
        }
    }
    // A DNS name is resolved by the nodes, not here; only an IP endpoint can be checked.
    if let Ok(ip) = endpoint_host.parse::<IpAddr>() {
        for (field, net) in [("pods", pods), ("services", services)] {
            if let Some(net) = net
                && net.contains(&ip)
            {
                errors.push(FieldError::new(
                    "spec.controlPlane.endpoint.host",
                    format!("must not be inside spec.network.{field} ({net}), got {ip}"),
                ));
            }
        }
    }
    if let Some(domain) = &network.service_domain {
        push(
            errors,
            "spec.network.serviceDomain",
            syntax::dns1123_subdomain(domain),
        );
    }
}

/// A CIDR whose host bits are zero.
fn cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("must be a CIDR such as 192.168.0.0/16, got {s:?}"))?;
    if net.trunc() != net {
        return Err(format!(
            "must be a network address ({}), got {s:?}",
            net.trunc()
        ));
    }
    Ok(net)
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_certificates(certificates: &CertificatesSpec, errors: &mut Vec<FieldError>) {
    if let Some(days) = certificates.renew_before_expiry_days
        && days < MIN_RENEW_BEFORE_EXPIRY_DAYS
    {
        errors.push(FieldError::new(
            "spec.certificates.renewBeforeExpiryDays",
            format!("must be at least {MIN_RENEW_BEFORE_EXPIRY_DAYS}, got {days}"),
        ));
    }
    if let Some(rotate_after) = &certificates.rotate_after
        && rotate_after
            .parse::<k8s_openapi::jiff::Timestamp>()
            .is_err()
    {
        errors.push(FieldError::new(
            "spec.certificates.rotateAfter",
            format!("must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got {rotate_after:?}"),
        ));
    }
}

fn not_blank(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

/// Records `result` at `path` if it is an error; returns whether it was fine.
pub(crate) fn push(errors: &mut Vec<FieldError>, path: &str, result: Result<(), String>) -> bool {
    match result {
        Ok(()) => true,
        Err(reason) => {
            errors.push(FieldError::new(path, reason));
            false
        }
    }
}
