//! The KubeadmControlPlane controller: the first Machine initializes the cluster, later ones
//! join one at a time (the next only once every existing one is ready), scale-down removes one
//! at a time (outdated first, then oldest), and a version or template change rolls the
//! Machines with a surge of one.
//!
//! A Machine also needs a rollout when it was created before `spec.rollout.after` (once that
//! time has passed), or when its certificates expire within
//! `spec.rollout.before.certificatesExpiryDays`. Certificates are simulated: each Machine gets
//! the annotation [`CERTIFICATES_EXPIRY_ANNOTATION`] (creation + [`CERTIFICATE_VALIDITY`],
//! scaled by the speed like every delay, as is the expiry window) which the Machine controller
//! mirrors into `status.certificatesExpiryDate`.
//!
//! Remediation: a Machine whose `HealthCheckSucceeded` condition is `False` (set by a
//! MachineHealthCheck) is deleted, one at a time, and only when the remaining healthy etcd
//! members keep quorum; the normal scale-up then creates its replacement.

use std::time::Instant;

use serde_json::{Value, json};
use tracing::{info, warn};

use super::{
    BOOTSTRAP, CAPI, CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, CONTROL_PLANE_NAME_LABEL, Cond, Ctx,
    INFRA, Result, delete, deleting, ensure_finalizer, get, list_selected, name, ns, owner_ref,
    random_suffix, remove_finalizer, set_conditions, write_status,
};
use crate::controllers::machine::machine_ready;

/// The KubeadmControlPlane finalizer.
pub const FINALIZER: &str = "kubeadm.controlplane.cluster.x-k8s.io";

/// The annotation carrying a Machine's simulated certificate expiry (RFC 3339), as upstream's
/// override annotation.
pub const CERTIFICATES_EXPIRY_ANNOTATION: &str = "machine.cluster.x-k8s.io/certificates-expiry";
/// How long kubeadm's certificates are valid: 365 days.
pub const CERTIFICATE_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

fn timestamp(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn to_instant(at: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> Instant {
    Instant::now() + (at - now).to_std().unwrap_or_default()
}

/// Why `m` needs replacing although its spec matches (rollout.after, certificate expiry);
/// asks for a pass when a time-based reason will start to hold.
fn rollout_reason(ctx: &Ctx<'_>, kcp: &Value, m: &Value) -> Option<&'static str> {
    let now = chrono::Utc::now();
    let created = timestamp(&m["metadata"]["creationTimestamp"])?;
    if let Some(after) = timestamp(&kcp["spec"]["rollout"]["after"])
        && created < after
    {
        if after <= now {
            return Some("rollout.after");
        }
        ctx.requeue_at(to_instant(after, now));
    }
    if let Some(days) = kcp["spec"]["rollout"]["before"]["certificatesExpiryDays"].as_u64() {
        let expiry = timestamp(&m["metadata"]["annotations"][CERTIFICATES_EXPIRY_ANNOTATION])
            .or_else(|| {
                chrono::Duration::from_std(ctx.world.speed().delay(CERTIFICATE_VALIDITY))
                    .ok()
                    .map(|v| created + v)
            })?;
        let window = chrono::Duration::from_std(
            ctx.world
                .speed()
                .delay(std::time::Duration::from_secs(days.saturating_mul(86_400))),
        )
        .ok()?;
        if expiry - window <= now {
            return Some("certificatesExpiryDays");
        }
        ctx.requeue_at(to_instant(expiry - window, now));
    }
    None
}

fn unhealthy(m: &Value) -> bool {
    super::condition(m, "HealthCheckSucceeded") == Some("False")
}

fn up_to_date(kcp: &Value, m: &Value) -> bool {
    m["spec"]["version"] == kcp["spec"]["version"]
        && m["metadata"]["annotations"]["cluster.x-k8s.io/cloned-from-name"]
            == kcp["spec"]["machineTemplate"]["spec"]["infrastructureRef"]["name"]
}

fn creation(m: &Value) -> (String, String) {
    (
        m["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name(m).to_owned(),
    )
}

/// Reconciles one KubeadmControlPlane.
pub fn reconcile(ctx: &Ctx<'_>, kcp: &Value) -> Result {
    // Paused first, as upstream (see `machine::reconcile`).
    if ctx.paused(kcp) {
        return Ok(());
    }
    let namespace = ns(kcp);
    let selector = format!("{CONTROL_PLANE_NAME_LABEL}={}", name(kcp));
    let mut machines = list_selected(
        ctx.api,
        CAPI,
        "Machine",
        Some(namespace),
        Some(selector.clone()),
    );
    machines.sort_by_key(creation);
    if deleting(kcp) {
        for m in machines.iter().filter(|m| !deleting(m)) {
            delete(ctx.api, CAPI, "Machine", namespace, name(m))?;
        }
        if machines.is_empty() {
            return remove_finalizer(ctx.api, kcp, FINALIZER);
        }
        return Ok(());
    }
    let kcp = &ensure_finalizer(ctx.api, kcp, FINALIZER)?;
    let Some(cluster_name) = super::cluster_name_of(kcp).map(str::to_owned).or_else(|| {
        super::owner_of_kind(kcp, "Cluster").and_then(|o| o["name"].as_str().map(str::to_owned))
    }) else {
        return Ok(());
    };
    let Some(cluster) = ctx.cluster(namespace, &cluster_name) else {
        return Ok(());
    };
    let desired = kcp["spec"]["replicas"].as_i64().unwrap_or(1);
    let infra_ready = cluster["status"]["initialization"]["infrastructureProvisioned"] == true
        && cluster["spec"]["controlPlaneEndpoint"]["host"]
            .as_str()
            .is_some_and(|h| !h.is_empty());
    let initialized = kcp["status"]["initialization"]["controlPlaneInitialized"] == true
        || (ctx
            .world
            .workload_cluster(namespace, &cluster_name)
            .is_some()
            && get(
                ctx.api,
                "v1",
                "Secret",
                namespace,
                &format!("{cluster_name}-kubeconfig"),
            )?
            .is_some());
    let count = i64::try_from(machines.len()).unwrap_or(i64::MAX);
    let all_ready = machines.iter().all(|m| machine_ready(m) && !deleting(m));
    let outdated: Vec<&Value> = machines
        .iter()
        .filter(|m| !up_to_date(kcp, m) || rollout_reason(ctx, kcp, m).is_some())
        .collect();
    let mut scaling_up = false;
    let mut scaling_down = false;
    let remediating = remediate(ctx, kcp, &machines)?;
    if remediating.is_some() {
        // One thing at a time: no scaling while a remediation is pending.
    } else if infra_ready && all_ready {
        let target = desired + i64::from(!outdated.is_empty());
        if count < target && (machines.is_empty() || initialized) {
            scaling_up = true;
            create_machine(ctx, kcp, cluster, machines.is_empty())?;
        } else if count > desired {
            scaling_down = true;
            // Outdated Machines go first, then the oldest.
            let victim = outdated.first().copied().or_else(|| machines.first());
            if let Some(v) = victim {
                info!(
                    kcp = name(kcp),
                    machine = name(v),
                    "Scaling down control plane"
                );
                delete(ctx.api, CAPI, "Machine", namespace, name(v))?;
            }
        }
    } else {
        scaling_up = count < desired;
        scaling_down = count > desired;
    }
    let ready = machines.iter().filter(|m| machine_ready(m)).count();
    let up = machines.len() - outdated.len();
    let available = initialized && ready > 0;
    let version = if all_ready && !machines.is_empty() {
        machines
            .iter()
            .filter_map(|m| m["spec"]["version"].as_str())
            .min()
            .map_or(Value::Null, |v| json!(v))
    } else {
        kcp["status"]["version"].clone()
    };
    let old = &kcp["status"];
    let mut status = json!({
        "observedGeneration": kcp["metadata"]["generation"],
        "selector": format!("{CLUSTER_NAME_LABEL}={cluster_name},{CONTROL_PLANE_LABEL}"),
        "replicas": machines.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "upToDateReplicas": up,
        "initialization": {"controlPlaneInitialized": initialized},
    });
    if !version.is_null() {
        status["version"] = version;
    }
    let conds = [
        Cond::new(
            "Available",
            available,
            if available {
                "Available"
            } else {
                "NotAvailable"
            },
            "",
        ),
        Cond::new(
            "Initialized",
            initialized,
            if initialized {
                "Initialized"
            } else {
                "NotInitialized"
            },
            "",
        ),
        Cond::new("CertificatesAvailable", true, "Available", ""),
        Cond::new(
            "EtcdClusterHealthy",
            available,
            if available { "Healthy" } else { "NotHealthy" },
            "",
        ),
        Cond::new(
            "ControlPlaneComponentsHealthy",
            available,
            if available { "Healthy" } else { "NotHealthy" },
            "",
        ),
        Cond::new(
            "MachinesReady",
            all_ready,
            if all_ready { "Ready" } else { "NotReady" },
            "",
        ),
        Cond::new(
            "MachinesUpToDate",
            outdated.is_empty(),
            if outdated.is_empty() {
                "UpToDate"
            } else {
                "NotUpToDate"
            },
            "",
        ),
        Cond::new(
            "RollingOut",
            !outdated.is_empty(),
            if outdated.is_empty() {
                "NotRollingOut"
            } else {
                "RollingOut"
            },
            "",
        ),
        Cond::new(
            "ScalingUp",
            scaling_up,
            if scaling_up {
                "ScalingUp"
            } else {
                "NotScalingUp"
            },
            "",
        ),
        Cond::new(
            "ScalingDown",
            scaling_down,
            if scaling_down {
                "ScalingDown"
            } else {
                "NotScalingDown"
            },
            "",
        ),
        match &remediating {
            Some(message) => Cond::new("Remediating", true, "Remediating", message.clone()),
            None => Cond::new("Remediating", false, "NotRemediating", ""),
        },
        Cond::new("Deleting", false, "NotDeleting", ""),
        Cond::new("Paused", false, "NotPaused", ""),
    ];
    set_conditions(&mut status, old, &kcp["metadata"]["generation"], &conds);
    write_status(ctx.api, kcp, status)
}

/// Remediates at most one unhealthy Machine; returns a message while remediation is pending.
fn remediate(ctx: &Ctx<'_>, kcp: &Value, machines: &[Value]) -> Result<Option<String>> {
    let Some(victim) = machines.iter().find(|m| unhealthy(m) && !deleting(m)) else {
        return Ok(None);
    };
    if let Some(d) = machines.iter().find(|m| deleting(m)) {
        return Ok(Some(format!(
            "Waiting for Machine {} to be deleted before remediating {}",
            name(d),
            name(victim)
        )));
    }
    // etcd members: Machines with a Node. Removing the victim must leave a quorum of the
    // remaining members healthy.
    let members: Vec<&Value> = machines
        .iter()
        .filter(|m| !m["status"]["nodeRef"].is_null())
        .collect();
    let is_member = members.iter().any(|m| name(m) == name(victim));
    let target = members.len() - usize::from(is_member);
    let quorum = target / 2 + 1;
    let healthy = members
        .iter()
        .filter(|m| name(m) != name(victim) && machine_ready(m) && !unhealthy(m))
        .count();
    if healthy < quorum {
        warn!(
            kcp = name(kcp),
            machine = name(victim),
            healthy,
            quorum,
            "Not remediating: etcd would lose quorum"
        );
        return Ok(Some(format!(
            "Machine {} is unhealthy, but removing it would lose etcd quorum ({healthy} healthy, {quorum} needed)",
            name(victim)
        )));
    }
    info!(
        kcp = name(kcp),
        machine = name(victim),
        "Remediating unhealthy control-plane machine"
    );
    delete(ctx.api, CAPI, "Machine", ns(victim), name(victim))?;
    Ok(Some(format!("Remediating Machine {}", name(victim))))
}

fn create_machine(ctx: &Ctx<'_>, kcp: &Value, cluster: &Value, first: bool) -> Result {
    let namespace = ns(kcp);
    let cluster_name = name(cluster);
    let infra_ref = &kcp["spec"]["machineTemplate"]["spec"]["infrastructureRef"];
    let template_name = infra_ref["name"].as_str().unwrap_or_default();
    let Some(template) = get(
        ctx.api,
        INFRA,
        "VSphereMachineTemplate",
        namespace,
        template_name,
    )?
    else {
        return Ok(());
    };
    let machine_name = format!("{}-{}", name(kcp), random_suffix(5));
    let mut labels = kcp["spec"]["machineTemplate"]["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[CLUSTER_NAME_LABEL] = json!(cluster_name);
    labels[CONTROL_PLANE_LABEL] = json!("");
    labels[CONTROL_PLANE_NAME_LABEL] = json!(name(kcp));
    let mut annotations = json!({"cluster.x-k8s.io/cloned-from-name": template_name,
                             "cluster.x-k8s.io/cloned-from-groupkind": "VSphereMachineTemplate.infrastructure.cluster.x-k8s.io"});
    if let Ok(validity) = chrono::Duration::from_std(ctx.world.speed().delay(CERTIFICATE_VALIDITY))
    {
        let expiry = chrono::Utc::now() + validity;
        annotations[CERTIFICATES_EXPIRY_ANNOTATION] =
            json!(expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    info!(kcp = name(kcp), machine = %machine_name, first, "Creating control-plane machine");
    let machine = ctx.api.create_object(json!({
        "apiVersion": CAPI,
        "kind": "Machine",
        "metadata": {
            "name": machine_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_ref(kcp, true)],
        },
        "spec": {
            "clusterName": cluster_name,
            "version": kcp["spec"]["version"],
            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfig", "name": machine_name}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "VSphereMachine", "name": machine_name},
        },
    }))?;
    let mut machine = machine;
    machine["apiVersion"] = json!(CAPI);
    machine["kind"] = json!("Machine");
    let kspec = &kcp["spec"]["kubeadmConfigSpec"];
    let mut config_spec = kspec.clone();
    if let Some(spec) = config_spec.as_object_mut() {
        if first {
            spec.remove("joinConfiguration");
        } else {
            spec.remove("initConfiguration");
            spec.remove("clusterConfiguration");
            if !spec.contains_key("joinConfiguration") {
                spec.insert("joinConfiguration".into(), json!({"controlPlane": {}}));
            }
        }
    }
    let child_meta = json!({
        "name": machine_name,
        "namespace": namespace,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [owner_ref(&machine, true)],
    });
    ctx.api.create_object(json!({
        "apiVersion": BOOTSTRAP,
        "kind": "KubeadmConfig",
        "metadata": child_meta,
        "spec": config_spec,
    }))?;
    ctx.api.create_object(json!({
        "apiVersion": INFRA,
        "kind": "VSphereMachine",
        "metadata": child_meta,
        "spec": template["spec"]["template"]["spec"],
    }))?;
    Ok(())
}
