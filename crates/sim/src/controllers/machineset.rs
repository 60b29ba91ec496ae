//! The MachineSet controller: keeps `spec.replicas` Machines (each with a KubeadmConfig cloned
//! from the KubeadmConfigTemplate and a VSphereMachine cloned from the VSphereMachineTemplate),
//! creating the missing ones at once and deleting surplus ones (marked for deletion first,
//! then not ready, then newest), and reports replica counts and v1beta2 conditions.
//!
//! Workers wait for the control plane through their bootstrap data (the kubeadm bootstrap
//! controller only writes join data once the Cluster's control plane is initialized).
//! Standing in for the kubelet's `--node-labels`, it also puts the labels of the Machine's
//! join configuration on its Node once that Node exists.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::info;

use super::{
    BOOTSTRAP, CAPI, CLUSTER_NAME_LABEL, Cond, Ctx, INFRA, Result, delete, deleting, get,
    list_selected, name, ns, owner_ref, random_suffix, set_conditions, write_status,
};
use crate::controllers::machine::machine_ready;

/// The label naming a Machine's MachineSet.
pub const SET_NAME_LABEL: &str = "cluster.x-k8s.io/set-name";
/// The label naming a MachineSet's or Machine's MachineDeployment.
pub const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";
/// The label carrying the hash of the MachineDeployment template a MachineSet was made from.
pub const TEMPLATE_HASH_LABEL: &str = "machine-template-hash";
/// The annotation that marks a Machine to be deleted first on scale-down.
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";

/// How long ago the RFC 3339 timestamp `ts` was (zero if in the future or unparsable).
pub(crate) fn age(ts: &Value) -> Duration {
    ts.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}

/// A label selector string from `matchLabels` (`matchExpressions` are not simulated).
pub(crate) fn selector_string(selector: &Value) -> String {
    selector["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The objects in `items` controlled by `owner` (by uid).
pub(crate) fn owned_by<'a>(items: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|i| {
            i["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner["metadata"]["uid"]))
        })
        .collect()
}

/// `(creationTimestamp, name)`, the order Machines were created in.
pub(crate) fn creation(m: &Value) -> (String, String) {
    (
        m["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name(m).to_owned(),
    )
}

/// Creates one Machine from a Machine template (`spec.template` of a MachineSet), with its
/// KubeadmConfig and VSphereMachine cloned from the referenced templates, all owned like
/// upstream (the Machine by `owner`, the clones by the Machine). Returns `false` when a
/// template does not exist yet.
pub(crate) fn create_machine_from_template(
    ctx: &Ctx<'_>,
    owner: &Value,
    template: &Value,
    mut labels: Value,
) -> Result<bool> {
    let namespace = ns(owner);
    let spec = &template["spec"];
    let infra_template_name = spec["infrastructureRef"]["name"]
        .as_str()
        .unwrap_or_default();
    let bootstrap_template_name = spec["bootstrap"]["configRef"]["name"].as_str();
    let Some(infra_template) = get(
        ctx.api,
        INFRA,
        "VSphereMachineTemplate",
        namespace,
        infra_template_name,
    )?
    else {
        return Ok(false);
    };
    let bootstrap_template = match bootstrap_template_name {
        Some(n) => match get(ctx.api, BOOTSTRAP, "KubeadmConfigTemplate", namespace, n)? {
            Some(t) => Some(t),
            None => return Ok(false),
        },
        None => None,
    };
    let machine_name = format!("{}-{}", name(owner), random_suffix(5));
    if !labels.is_object() {
        labels = json!({});
    }
    if let Some(extra) = template["metadata"]["labels"].as_object() {
        for (k, v) in extra {
            labels[k] = v.clone();
        }
    }
    let mut annotations = template["metadata"]["annotations"].clone();
    if !annotations.is_object() {
        annotations = json!({});
    }
    let mut machine_spec = spec.clone();
    machine_spec["infrastructureRef"] = json!({
        "apiGroup": "infrastructure.cluster.x-k8s.io",
        "kind": "VSphereMachine",
        "name": machine_name,
    });
    if bootstrap_template.is_some() {
        machine_spec["bootstrap"] = json!({"configRef": {
            "apiGroup": "bootstrap.cluster.x-k8s.io",
            "kind": "KubeadmConfig",
            "name": machine_name,
        }});
    }
    info!(owner = name(owner), machine = %machine_name, "Creating machine");
    let mut machine = ctx.api.create_object(json!({
        "apiVersion": CAPI,
        "kind": "Machine",
        "metadata": {
            "name": machine_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_ref(owner, true)],
        },
        "spec": machine_spec,
    }))?;
    machine["apiVersion"] = json!(CAPI);
    machine["kind"] = json!("Machine");
    let child_meta = |template_name: &str, group_kind: &str| {
        let mut a = annotations.clone();
        a["cluster.x-k8s.io/cloned-from-name"] = json!(template_name);
        a["cluster.x-k8s.io/cloned-from-groupkind"] = json!(group_kind);
        json!({
            "name": machine_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": a,
            "ownerReferences": [owner_ref(&machine, true)],
        })
    };
    if let (Some(t), Some(tn)) = (&bootstrap_template, bootstrap_template_name) {
        ctx.api.create_object(json!({
            "apiVersion": BOOTSTRAP,
            "kind": "KubeadmConfig",
            "metadata": child_meta(tn, "KubeadmConfigTemplate.bootstrap.cluster.x-k8s.io"),
            "spec": t["spec"]["template"]["spec"],
        }))?;
    }
    ctx.api.create_object(json!({
        "apiVersion": INFRA,
        "kind": "VSphereMachine",
        "metadata": child_meta(
            infra_template_name,
            "VSphereMachineTemplate.infrastructure.cluster.x-k8s.io",
        ),
        "spec": infra_template["spec"]["template"]["spec"],
    }))?;
    Ok(true)
}

/// The labels the kubelet of a joining Machine registers its Node with: kubeadm's
/// `nodeRegistration.kubeletExtraArgs` `node-labels` (v1beta2 list or v1beta1 map form).
pub(crate) fn node_labels_of(config_spec: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for reg in [
        &config_spec["joinConfiguration"]["nodeRegistration"],
        &config_spec["initConfiguration"]["nodeRegistration"],
    ] {
        let args = &reg["kubeletExtraArgs"];
        let value = match args {
            Value::Array(list) => list
                .iter()
                .find(|a| a["name"] == "node-labels")
                .and_then(|a| a["value"].as_str()),
            Value::Object(map) => map.get("node-labels").and_then(Value::as_str),
            _ => None,
        };
        if let Some(v) = value {
            for pair in v.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                out.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            break;
        }
    }
    out
}

/// Puts the Machine's `node-labels` on its Node (what the kubelet does when it registers).
fn label_node(ctx: &Ctx<'_>, m: &Value) -> Result {
    let Some(node_name) = m["status"]["nodeRef"]["name"].as_str() else {
        return Ok(());
    };
    let Some(config_name) = m["spec"]["bootstrap"]["configRef"]["name"].as_str() else {
        return Ok(());
    };
    let Some(config) = get(ctx.api, BOOTSTRAP, "KubeadmConfig", ns(m), config_name)? else {
        return Ok(());
    };
    let labels = node_labels_of(&config["spec"]);
    if labels.is_empty() {
        return Ok(());
    }
    let Some(wc) = super::cluster_name_of(m).and_then(|c| ctx.world.workload_cluster(ns(m), c))
    else {
        return Ok(());
    };
    let api = wc.api();
    let Some(mut node) = get(&api, "v1", "Node", "", node_name)? else {
        return Ok(());
    };
    let missing: Vec<_> = labels
        .iter()
        .filter(|(k, v)| node["metadata"]["labels"][k.as_str()] != v.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !node["metadata"]["labels"].is_object() {
        node["metadata"]["labels"] = json!({});
    }
    for (k, v) in missing {
        node["metadata"]["labels"][k.as_str()] = json!(v);
    }
    match api.update_object(node) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The order Machines are deleted in on scale-down: marked ones, then not ready, then newest.
fn deletion_order(machines: &mut [&Value]) {
    machines.sort_by_key(|m| {
        let marked = m["metadata"]["annotations"][DELETE_MACHINE_ANNOTATION].is_null();
        let ready = machine_ready(m);
        let (ts, n) = creation(m);
        (marked, ready, std::cmp::Reverse(ts), std::cmp::Reverse(n))
    });
}

/// Whether `ms` is an old set of a MachineDeployment whose rollout strategy is OnDelete: its
/// template hash is not the MachineDeployment's current one.
fn replaced_on_delete(ctx: &Ctx<'_>, ms: &Value) -> Result<bool> {
    let Some(md_name) = ms["metadata"]["labels"][DEPLOYMENT_NAME_LABEL].as_str() else {
        return Ok(false);
    };
    let Some(md) = get(ctx.api, CAPI, "MachineDeployment", ns(ms), md_name)? else {
        return Ok(false);
    };
    if md["spec"]["rollout"]["strategy"]["type"] != "OnDelete" {
        return Ok(false);
    }
    let current = super::machinedeployment::template_hash(&md["spec"]["template"]["spec"], "");
    Ok(
        ms["metadata"]["annotations"][super::machinedeployment::TEMPLATE_HASH_ANNOTATION]
            .as_str()
            .is_some_and(|h| h != current),
    )
}

/// Reconciles one MachineSet.
pub fn reconcile(ctx: &Ctx<'_>, ms: &Value) -> Result {
    // Deleting: the garbage collector removes the Machines it owns.
    if deleting(ms) || ctx.paused(ms) {
        return Ok(());
    }
    let namespace = ns(ms);
    let Some(cluster_name) = super::cluster_name_of(ms).map(str::to_owned) else {
        return Ok(());
    };
    let all = list_selected(
        ctx.api,
        CAPI,
        "Machine",
        Some(namespace),
        Some(selector_string(&ms["spec"]["selector"])),
    );
    let mut machines = owned_by(&all, ms);
    machines.sort_by_key(|m| creation(m));
    let alive: Vec<&Value> = machines.iter().copied().filter(|m| !deleting(m)).collect();
    let desired = usize::try_from(ms["spec"]["replicas"].as_i64().unwrap_or(1)).unwrap_or(0);
    let mut scaling_up = false;
    let mut scaling_down = false;
    if alive.len() < desired && replaced_on_delete(ctx, ms)? {
        // An old set of an OnDelete MachineDeployment never replaces a deleted Machine: the
        // MachineDeployment moves that replica to its newest set (upstream's OnDelete
        // contract); creating one here would race it.
    } else if alive.len() < desired {
        scaling_up = true;
        let mut labels = ms["spec"]["template"]["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels[CLUSTER_NAME_LABEL] = json!(cluster_name);
        labels[SET_NAME_LABEL] = json!(name(ms));
        if let Some(h) = ms["metadata"]["labels"][TEMPLATE_HASH_LABEL].as_str() {
            labels[TEMPLATE_HASH_LABEL] = json!(h);
        }
        if let Some(d) = ms["metadata"]["labels"][DEPLOYMENT_NAME_LABEL].as_str() {
            labels[DEPLOYMENT_NAME_LABEL] = json!(d);
        }
        for _ in alive.len()..desired {
            if !create_machine_from_template(ctx, ms, &ms["spec"]["template"], labels.clone())? {
                // A template is missing; come back later.
                ctx.requeue_after(Duration::from_secs(10));
                break;
            }
        }
    } else if alive.len() > desired {
        scaling_down = true;
        let mut victims = alive.clone();
        deletion_order(&mut victims);
        for v in victims.iter().take(alive.len() - desired) {
            info!(machineset = name(ms), machine = name(v), "Scaling down");
            delete(ctx.api, CAPI, "Machine", namespace, name(v))?;
        }
    }
    for m in &alive {
        label_node(ctx, m)?;
    }
    let ready = alive.iter().filter(|m| machine_ready(m)).count();
    let up_to_date = alive
        .iter()
        .filter(|m| super::condition(m, "UpToDate") != Some("False"))
        .count();
    let all_ready = ready == alive.len();
    let old = &ms["status"];
    let mut status = json!({
        "observedGeneration": ms["metadata"]["generation"],
        "selector": selector_string(&ms["spec"]["selector"]),
        "replicas": machines.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "upToDateReplicas": up_to_date,
    });
    let conds = [
        Cond::new(
            "MachinesReady",
            all_ready,
            if all_ready { "Ready" } else { "NotReady" },
            if all_ready {
                String::new()
            } else {
                format!(
                    "{} of {} Machines not ready",
                    alive.len() - ready,
                    alive.len()
                )
            },
        ),
        Cond::new(
            "MachinesUpToDate",
            up_to_date == alive.len(),
            if up_to_date == alive.len() {
                "UpToDate"
            } else {
                "NotUpToDate"
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
            if scaling_up {
                format!("Scaling up from {} to {desired} replicas", alive.len())
            } else {
                String::new()
            },
        ),
        Cond::new(
            "ScalingDown",
            scaling_down,
            if scaling_down {
                "ScalingDown"
            } else {
                "NotScalingDown"
            },
            if scaling_down {
                format!("Scaling down from {} to {desired} replicas", alive.len())
            } else {
                String::new()
            },
        ),
        Cond::new("Remediating", false, "NotRemediating", ""),
        Cond::new("Deleting", false, "NotDeleting", ""),
        Cond::new("Paused", false, "NotPaused", ""),
    ];
    set_conditions(&mut status, old, &ms["metadata"]["generation"], &conds);
    write_status(ctx.api, ms, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_come_from_the_join_configuration() {
        let spec = json!({"joinConfiguration": {"nodeRegistration": {"kubeletExtraArgs": [
            {"name": "cloud-provider", "value": "external"},
            {"name": "node-labels", "value": "tier=batch,fledge.dev/pool=batch"},
        ]}}});
        assert_eq!(
            node_labels_of(&spec),
            vec![
                ("tier".to_owned(), "batch".to_owned()),
                ("fledge.dev/pool".to_owned(), "batch".to_owned())
            ]
        );
        let map = json!({"joinConfiguration": {"nodeRegistration": {"kubeletExtraArgs": {"node-labels": "a=b"}}}});
        assert_eq!(node_labels_of(&map), vec![("a".to_owned(), "b".to_owned())]);
        assert!(node_labels_of(&json!({})).is_empty());
    }

    #[test]
    fn selector_string_joins_match_labels() {
        let s = selector_string(&json!({"matchLabels": {"a": "1", "b": "2"}}));
        assert_eq!(s, "a=1,b=2");
    }
}
