//! The Cluster controller: waits for its infrastructure and control plane, copies the control
//! plane endpoint, and reports v1beta2 status; deletion removes descendants first (workers,
//! then the control plane, then the infrastructure), then the workload cluster itself.

use serde_json::{Value, json};
use tracing::info;

use super::{
    CAPI, CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, CONTROLPLANE, Cond, Ctx, INFRA, Result,
    condition, delete, deleting, ensure_finalizer, get, list_selected, name, ns, owner_ref,
    remove_finalizer, set_conditions, write_status,
};

/// The Cluster finalizer.
pub const FINALIZER: &str = "cluster.cluster.x-k8s.io";

fn ref_api_version(r: &Value, default: &str) -> String {
    r["apiGroup"]
        .as_str()
        .map_or_else(|| default.to_owned(), |g| format!("{g}/v1beta2"))
}

/// Ensures `child` (if it exists) is owned by the Cluster, as upstream does for its refs.
fn adopt(ctx: &Ctx<'_>, cluster: &Value, child: &Value) -> Result<Value> {
    let owned = child["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| r["uid"] == cluster["metadata"]["uid"]));
    if owned {
        return Ok(child.clone());
    }
    let mut child = child.clone();
    match child["metadata"]["ownerReferences"].as_array_mut() {
        Some(rs) => rs.push(owner_ref(cluster, false)),
        None => child["metadata"]["ownerReferences"] = json!([owner_ref(cluster, false)]),
    }
    ctx.api.update_object(child)
}

/// Reconciles one Cluster.
pub fn reconcile(ctx: &Ctx<'_>, c: &Value) -> Result {
    // Paused first, as upstream (see `machine::reconcile`).
    if ctx.paused(c) {
        return Ok(());
    }
    if deleting(c) {
        return reconcile_delete(ctx, c);
    }
    let c = &ensure_finalizer(ctx.api, c, FINALIZER)?;
    let (namespace, cname) = (ns(c), name(c));
    let infra_ref = &c["spec"]["infrastructureRef"];
    let infra = match infra_ref["name"].as_str() {
        Some(n) => get(
            ctx.api,
            &ref_api_version(infra_ref, INFRA),
            infra_ref["kind"].as_str().unwrap_or("VSphereCluster"),
            namespace,
            n,
        )?
        .map(|i| adopt(ctx, c, &i))
        .transpose()?,
        None => None,
    };
    let cp_ref = &c["spec"]["controlPlaneRef"];
    let cp = match cp_ref["name"].as_str() {
        Some(n) => get(
            ctx.api,
            &ref_api_version(cp_ref, CONTROLPLANE),
            cp_ref["kind"].as_str().unwrap_or("KubeadmControlPlane"),
            namespace,
            n,
        )?
        .map(|k| adopt(ctx, c, &k))
        .transpose()?,
        None => None,
    };
    let infra_ready = infra
        .as_ref()
        .is_some_and(|i| i["status"]["initialization"]["provisioned"] == true);
    // The endpoint comes from the infrastructure cluster once it is provisioned.
    let endpoint_set = c["spec"]["controlPlaneEndpoint"]["host"]
        .as_str()
        .is_some_and(|h| !h.is_empty());
    if infra_ready
        && !endpoint_set
        && let Some(i) = &infra
        && i["spec"]["controlPlaneEndpoint"]["host"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    {
        let mut updated = c.clone();
        updated["spec"]["controlPlaneEndpoint"] = i["spec"]["controlPlaneEndpoint"].clone();
        ctx.api.update_object(updated)?;
        return Ok(());
    }
    let cp_initialized = cp
        .as_ref()
        .is_some_and(|k| k["status"]["initialization"]["controlPlaneInitialized"] == true);
    let cp_available = cp
        .as_ref()
        .is_some_and(|k| condition(k, "Available") == Some("True"));
    let selector = Some(format!("{CLUSTER_NAME_LABEL}={cname}"));
    let mds = list_selected(
        ctx.api,
        CAPI,
        "MachineDeployment",
        Some(namespace),
        selector.clone(),
    );
    let workers_available = mds
        .iter()
        .all(|m| condition(m, "Available") == Some("True"));
    let sum = |objs: &[Value], f: &str| -> i64 {
        objs.iter()
            .map(|o| o["status"][f].as_i64().unwrap_or(0))
            .sum()
    };
    let desired_workers: i64 = mds
        .iter()
        .map(|m| m["spec"]["replicas"].as_i64().unwrap_or(1))
        .sum();
    let phase = if !infra_ref.is_object() {
        "Pending"
    } else if infra_ready && endpoint_set {
        "Provisioned"
    } else {
        "Provisioning"
    };
    let available = infra_ready && cp_initialized && cp_available && workers_available;
    let old = &c["status"];
    let mut status = json!({
        "observedGeneration": c["metadata"]["generation"],
        "phase": phase,
        "initialization": {
            "infrastructureProvisioned": infra_ready,
            "controlPlaneInitialized": cp_initialized,
        },
    });
    if let Some(k) = &cp {
        status["controlPlane"] = json!({
            "desiredReplicas": k["spec"]["replicas"].as_i64().unwrap_or(1),
            "replicas": k["status"]["replicas"].as_i64().unwrap_or(0),
            "readyReplicas": k["status"]["readyReplicas"].as_i64().unwrap_or(0),
            "availableReplicas": k["status"]["availableReplicas"].as_i64().unwrap_or(0),
            "upToDateReplicas": k["status"]["upToDateReplicas"].as_i64().unwrap_or(0),
        });
    }
    status["workers"] = json!({
        "desiredReplicas": desired_workers,
        "replicas": sum(&mds, "replicas"),
        "readyReplicas": sum(&mds, "readyReplicas"),
        "availableReplicas": sum(&mds, "availableReplicas"),
        "upToDateReplicas": sum(&mds, "upToDateReplicas"),
    });
    let conds = [
        Cond::new(
            "InfrastructureReady",
            infra_ready,
            if infra_ready { "Ready" } else { "NotReady" },
            if infra_ready {
                String::new()
            } else {
                infra
                    .as_ref()
                    .map_or("Infrastructure cluster does not exist".to_owned(), |i| {
                        format!(
                            "{} status.initialization.provisioned is false",
                            i["kind"].as_str().unwrap_or_default()
                        )
                    })
            },
        ),
        Cond::new(
            "ControlPlaneInitialized",
            cp_initialized,
            if cp_initialized {
                "Initialized"
            } else {
                "NotInitialized"
            },
            if cp_initialized {
                ""
            } else {
                "Control plane not yet initialized"
            },
        ),
        Cond::new(
            "ControlPlaneAvailable",
            cp_available,
            if cp_available {
                "Available"
            } else {
                "NotAvailable"
            },
            "",
        ),
        Cond::new(
            "WorkersAvailable",
            workers_available,
            if mds.is_empty() {
                "NoWorkers"
            } else if workers_available {
                "Available"
            } else {
                "NotAvailable"
            },
            "",
        ),
        Cond::new(
            "RemoteConnectionProbe",
            cp_initialized,
            if cp_initialized {
                "ProbeSucceeded"
            } else {
                "ProbeFailed"
            },
            "",
        ),
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
        Cond::new("Paused", false, "NotPaused", ""),
        Cond::new("Deleting", false, "NotDeleting", ""),
    ];
    set_conditions(&mut status, old, &c["metadata"]["generation"], &conds);
    write_status(ctx.api, c, status)
}

fn reconcile_delete(ctx: &Ctx<'_>, c: &Value) -> Result {
    let (namespace, cname) = (ns(c), name(c));
    let mut status = c["status"].clone();
    if status["phase"] != "Deleting" {
        status["phase"] = json!("Deleting");
        write_status(ctx.api, c, status)?;
    }
    let selector = Some(format!("{CLUSTER_NAME_LABEL}={cname}"));
    // Workers first.
    let mut remaining = 0;
    for kind in ["MachineDeployment", "MachineSet"] {
        for o in list_selected(ctx.api, CAPI, kind, Some(namespace), selector.clone()) {
            remaining += 1;
            if !deleting(&o) {
                delete(ctx.api, CAPI, kind, namespace, name(&o))?;
            }
        }
    }
    let machines = list_selected(ctx.api, CAPI, "Machine", Some(namespace), selector.clone());
    for m in machines
        .iter()
        .filter(|m| m["metadata"]["labels"][CONTROL_PLANE_LABEL].is_null())
    {
        remaining += 1;
        if !deleting(m) {
            delete(ctx.api, CAPI, "Machine", namespace, name(m))?;
        }
    }
    if remaining > 0 {
        return Ok(());
    }
    // Then the control plane (which deletes its Machines).
    let cp_ref = &c["spec"]["controlPlaneRef"];
    if let Some(n) = cp_ref["name"].as_str()
        && let Some(k) = get(ctx.api, CONTROLPLANE, "KubeadmControlPlane", namespace, n)?
    {
        if !deleting(&k) {
            info!(cluster = cname, "Deleting control plane");
            delete(ctx.api, CONTROLPLANE, "KubeadmControlPlane", namespace, n)?;
        }
        return Ok(());
    }
    let cp_machines: Vec<_> = machines
        .iter()
        .filter(|m| !m["metadata"]["labels"][CONTROL_PLANE_LABEL].is_null())
        .collect();
    if !cp_machines.is_empty() {
        for m in cp_machines.into_iter().filter(|m| !deleting(m)) {
            delete(ctx.api, CAPI, "Machine", namespace, name(m))?;
        }
        return Ok(());
    }
    // Then the infrastructure.
    let infra_ref = &c["spec"]["infrastructureRef"];
    if let Some(n) = infra_ref["name"].as_str()
        && get(ctx.api, INFRA, "VSphereCluster", namespace, n)?.is_some()
    {
        delete(ctx.api, INFRA, "VSphereCluster", namespace, n)?;
        return Ok(());
    }
    info!(cluster = cname, "Removing the workload cluster");
    ctx.world.remove_workload_cluster(namespace, cname);
    remove_finalizer(ctx.api, c, FINALIZER)
}
