//! The Machine controller: bootstrap data, then infrastructure, then the Node; phases
//! Pending → Provisioning → Provisioned → Running; deletion removes the infrastructure (the VM),
//! the Node and the bootstrap config before releasing the finalizer.

use serde_json::{Value, json};
use tracing::info;

use super::{
    BOOTSTRAP, Cond, Ctx, INFRA, Result, delete, deleting, ensure_finalizer, get, name, ns,
    remove_finalizer, set_conditions, write_status,
};

/// The Machine finalizer.
pub const FINALIZER: &str = "machine.cluster.x-k8s.io";

/// Whether a Machine's Node exists and is Ready.
pub fn machine_ready(m: &Value) -> bool {
    !m["status"]["nodeRef"]["name"].is_null() && super::condition(m, "NodeReady") == Some("True")
}

fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

/// Reconciles one Machine.
pub fn reconcile(ctx: &Ctx<'_>, m: &Value) -> Result {
    // Paused first, as upstream: a paused object is not touched at all, not even its
    // finalizers or its deletion (clusterctl move deletes paused objects in the source).
    if ctx.paused(m) {
        return Ok(());
    }
    if deleting(m) {
        return reconcile_delete(ctx, m);
    }
    let m = &ensure_finalizer(ctx.api, m, FINALIZER)?;
    let namespace = ns(m);
    let cluster = super::cluster_name_of(m).unwrap_or_default();
    // Bootstrap.
    let config = match m["spec"]["bootstrap"]["configRef"]["name"].as_str() {
        Some(n) => get(ctx.api, BOOTSTRAP, "KubeadmConfig", namespace, n)?,
        None => None,
    };
    let data_secret = m["spec"]["bootstrap"]["dataSecretName"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            config
                .as_ref()
                .and_then(|c| c["status"]["dataSecretName"].as_str().map(str::to_owned))
        });
    if let Some(s) = &data_secret
        && m["spec"]["bootstrap"]["dataSecretName"].is_null()
    {
        let mut updated = m.clone();
        updated["spec"]["bootstrap"]["dataSecretName"] = json!(s);
        ctx.api.update_object(updated)?;
        return Ok(());
    }
    // Infrastructure.
    let infra = match m["spec"]["infrastructureRef"]["name"].as_str() {
        Some(n) => get(ctx.api, INFRA, "VSphereMachine", namespace, n)?,
        None => None,
    };
    // Once provisioned, always provisioned (as upstream): a VM lost later shows on the Node.
    let infra_ready = infra
        .as_ref()
        .is_some_and(|i| i["status"]["initialization"]["provisioned"] == true)
        || m["status"]["initialization"]["infrastructureProvisioned"] == true;
    let provider_id = infra
        .as_ref()
        .and_then(|i| i["spec"]["providerID"].as_str())
        .filter(|_| infra_ready);
    if let Some(pid) = provider_id
        && m["spec"]["providerID"] != pid
    {
        let mut updated = m.clone();
        updated["spec"]["providerID"] = json!(pid);
        ctx.api.update_object(updated)?;
        return Ok(());
    }
    // Node.
    let provider_id = provider_id.or_else(|| m["spec"]["providerID"].as_str());
    let node = match (provider_id, ctx.world.workload_cluster(namespace, cluster)) {
        (Some(pid), Some(wc)) => super::list(&wc.api(), "v1", "Node", None)
            .into_iter()
            .find(|n| n["spec"]["providerID"] == pid),
        _ => None,
    };
    let ready = node.as_ref().is_some_and(node_ready);
    let old = &m["status"];
    let phase = if node.is_some() {
        "Running"
    } else if infra_ready {
        "Provisioned"
    } else if data_secret.is_some() {
        "Provisioning"
    } else {
        "Pending"
    };
    let mut status = json!({
        "observedGeneration": m["metadata"]["generation"],
        "phase": phase,
        "initialization": {
            "bootstrapDataSecretCreated": data_secret.is_some(),
            "infrastructureProvisioned": infra_ready,
        },
    });
    if let Some(i) = &infra
        && i["status"]["addresses"].is_array()
    {
        status["addresses"] = i["status"]["addresses"].clone();
    }
    // The simulated certificate expiry KubeadmControlPlane records on its Machines.
    if let Some(expiry) =
        m["metadata"]["annotations"][super::kcp::CERTIFICATES_EXPIRY_ANNOTATION].as_str()
    {
        status["certificatesExpiryDate"] = json!(expiry);
    }
    if let Some(n) = &node {
        status["nodeRef"] = json!({"name": name(n)});
        status["nodeInfo"] = n["status"]["nodeInfo"].clone();
    }
    // Keep what MachineHealthCheck owns.
    let mut conds = vec![
        Cond::new(
            "BootstrapConfigReady",
            data_secret.is_some(),
            if data_secret.is_some() {
                "Ready"
            } else {
                "NotReady"
            },
            "",
        ),
        Cond::new(
            "InfrastructureReady",
            infra_ready,
            if infra_ready { "Ready" } else { "NotReady" },
            "",
        ),
        Cond::new(
            "NodeReady",
            ready,
            if ready {
                "NodeReady"
            } else if node.is_some() {
                "NodeNotReady"
            } else {
                "NodeDoesNotExist"
            },
            if node.is_none() && infra_ready {
                "Waiting for a Node with spec.providerID"
            } else {
                ""
            },
        ),
        Cond::new(
            "NodeHealthy",
            ready,
            if ready {
                "NodeHealthy"
            } else {
                "NodeNotHealthy"
            },
            "",
        ),
        Cond::new("Ready", ready, if ready { "Ready" } else { "NotReady" }, ""),
        Cond::new(
            "Available",
            ready,
            if ready { "Available" } else { "NotAvailable" },
            "",
        ),
        Cond::new("UpToDate", true, "UpToDate", ""),
        Cond::new("Deleting", false, "NotDeleting", ""),
        Cond::new("Paused", false, "NotPaused", ""),
    ];
    if let Some(c) = old["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "HealthCheckSucceeded"))
    {
        conds.push(Cond {
            type_: "HealthCheckSucceeded",
            status: if c["status"] == "True" {
                "True"
            } else {
                "False"
            },
            reason: c["reason"].as_str().unwrap_or_default().to_owned(),
            message: c["message"].as_str().unwrap_or_default().to_owned(),
        });
    }
    set_conditions(&mut status, old, &m["metadata"]["generation"], &conds);
    write_status(ctx.api, m, status)
}

fn reconcile_delete(ctx: &Ctx<'_>, m: &Value) -> Result {
    let namespace = ns(m);
    if m["status"]["phase"] != "Deleting" {
        let mut status = m["status"].clone();
        status["phase"] = json!("Deleting");
        write_status(ctx.api, m, status)?;
    }
    // The VM first: it goes away with its VSphereMachine.
    if let Some(n) = m["spec"]["infrastructureRef"]["name"].as_str()
        && get(ctx.api, INFRA, "VSphereMachine", namespace, n)?.is_some()
    {
        info!(machine = name(m), "Deleting infrastructure");
        delete(ctx.api, INFRA, "VSphereMachine", namespace, n)?;
        return Ok(());
    }
    // Then the Node in the workload cluster (if that cluster still exists).
    if let Some(node) = m["status"]["nodeRef"]["name"].as_str()
        && let Some(wc) =
            super::cluster_name_of(m).and_then(|c| ctx.world.workload_cluster(namespace, c))
    {
        info!(machine = name(m), node, "Deleting node");
        delete(&wc.api(), "v1", "Node", "", node)?;
    }
    if let Some(n) = m["spec"]["bootstrap"]["configRef"]["name"].as_str() {
        delete(ctx.api, BOOTSTRAP, "KubeadmConfig", namespace, n)?;
    }
    remove_finalizer(ctx.api, m, FINALIZER)
}
