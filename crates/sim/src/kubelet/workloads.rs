//! The workload controllers: Deployment → ReplicaSet → Pods, DaemonSet (one Pod per eligible
//! Node) and StatefulSet (ordinal Pods), with their status, like kube-controller-manager.

use std::collections::{BTreeMap, HashMap};

use kube_sim::api_server::{DeleteOptions, PatchType, WriteOptions, now_rfc3339};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::objects::{
    cond, conditions_with_times, controller_ref, controller_uid, int, int_or_percent, is_deleting,
    labels, meta, name, namespace, selector_matches, template_hash, uid,
};
use super::scheduling::{node_matches, untolerated_taints};
use super::{Kubelet, Snapshot};

const APPS: &str = "apps/v1";
const TEMPLATE_HASH: &str = "pod-template-hash";
const REVISION_HASH: &str = "controller-revision-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

/// Whether a Pod counts for its owner: not terminating, not finished.
fn active(pod: &Value) -> bool {
    !is_deleting(pod)
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

/// Whether a Pod is Ready.
fn pod_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && super::objects::condition_true(pod, "Ready")
}

fn owned_by<'a>(pods: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    let owner_uid = uid(owner);
    let selector = &owner["spec"]["selector"];
    pods.iter()
        .filter(|p| controller_uid(p) == Some(owner_uid))
        .filter(|p| selector_matches(selector, &labels(p)))
        .collect()
}

/// The collision count that salts the template hash: a count of 0 (which status writes) must hash
/// like an absent one, or the revision would change as soon as the status is written.
fn collision_count(obj: &Value) -> Option<i64> {
    obj["status"]["collisionCount"].as_i64().filter(|c| *c > 0)
}

fn key(obj: &Value) -> String {
    format!("{}/{}", namespace(obj), name(obj))
}

impl Kubelet {
    /// Writes `status` on a workload if it changed.
    fn write_status(&self, obj: &Value, kind: &str, status: Value) {
        if obj["status"] == status {
            return;
        }
        let mut o = obj.clone();
        o["apiVersion"] = json!(APPS);
        o["kind"] = json!(kind);
        o["status"] = status;
        if let Err(err) = self.api.update_object_status(o)
            && !err.is_conflict()
            && !err.is_not_found()
        {
            warn!(kind, object = %key(obj), %err, "updating status failed");
        }
    }

    fn merge_patch(&self, kind: &str, obj: &Value, patch: &Value) {
        let opts = WriteOptions {
            field_manager: Some("kube-controller-manager".into()),
            ..WriteOptions::default()
        };
        if let Err(err) = self.api.patch_object(
            APPS,
            kind,
            Some(namespace(obj)),
            name(obj),
            PatchType::Merge,
            patch,
            &opts,
        ) && !err.is_not_found()
        {
            warn!(kind, object = %key(obj), %err, "patching failed");
        }
    }

    fn delete_pod(&self, pod: &Value, why: &str) {
        let opts = DeleteOptions {
            precondition_uid: Some(uid(pod).to_owned()),
            ..DeleteOptions::default()
        };
        match self
            .api
            .delete_object("v1", "Pod", Some(namespace(pod)), name(pod), &opts)
        {
            Ok(_) => debug!(pod = %key(pod), why, "deleting pod"),
            Err(err) if err.is_not_found() || err.is_conflict() => {}
            Err(err) => warn!(pod = %key(pod), %err, "deleting pod failed"),
        }
    }

    /// Creates a Pod from `template` owned by `owner`.
    fn create_pod(
        &self,
        owner: &Value,
        kind: &str,
        template: &Value,
        pod_name: Option<&str>,
        extra_labels: &BTreeMap<String, String>,
        spec_patch: impl FnOnce(&mut Value),
    ) {
        let mut meta_obj = json!({
            "namespace": namespace(owner),
            "labels": template["metadata"]["labels"],
            "ownerReferences": [controller_ref(owner, APPS, kind)],
        });
        if !template["metadata"]["annotations"].is_null() {
            meta_obj["annotations"] = template["metadata"]["annotations"].clone();
        }
        if !meta_obj["labels"].is_object() {
            meta_obj["labels"] = json!({});
        }
        for (k, v) in extra_labels {
            meta_obj["labels"][k] = json!(v);
        }
        match pod_name {
            Some(n) => meta_obj["name"] = json!(n),
            None => meta_obj["generateName"] = json!(format!("{}-", name(owner))),
        }
        let mut spec = template["spec"].clone();
        spec_patch(&mut spec);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta_obj, "spec": spec});
        match self.api.create_object(pod) {
            Ok(p) => debug!(kind, owner = %key(owner), pod = name(&p), "created pod"),
            Err(err) => warn!(kind, owner = %key(owner), %err, "creating pod failed"),
        }
    }

    /// Deployments: the ReplicaSet of the current template, rolling updates, status.
    pub(super) fn sync_deployments(&self, snap: &Snapshot) {
        for d in &snap.deployments {
            if is_deleting(d) {
                continue;
            }
            if let Err(err) = self.sync_deployment(d, snap) {
                warn!(deployment = %key(d), %err, "reconciling failed");
            }
        }
    }

    fn sync_deployment(&self, d: &Value, snap: &Snapshot) -> Result<(), kube_sim::ApiError> {
        let ns = namespace(d);
        let desired = int(&d["spec"]["replicas"], 1).max(0);
        let collision = collision_count(d);
        let hash = template_hash(&d["spec"]["template"], collision);
        let mut rses: Vec<&Value> = snap
            .replicasets
            .iter()
            .filter(|rs| controller_uid(rs) == Some(uid(d)) && !is_deleting(rs))
            .collect();
        rses.sort_by_key(|rs| {
            (
                meta(rs, "creationTimestamp").to_owned(),
                name(rs).to_owned(),
            )
        });
        let new_rs = rses
            .iter()
            .copied()
            .find(|rs| rs["metadata"]["labels"][TEMPLATE_HASH] == hash.as_str());
        let olds: Vec<&Value> = rses
            .iter()
            .copied()
            .filter(|rs| rs["metadata"]["labels"][TEMPLATE_HASH] != hash.as_str())
            .collect();
        let revision = |rs: &Value| {
            rs["metadata"]["annotations"][REVISION]
                .as_str()
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let max_revision = rses.iter().map(|rs| revision(rs)).max().unwrap_or(0);
        let replicas = |rs: &Value| int(&rs["spec"]["replicas"], 0);
        let st = |rs: &Value, f: &str| int(&rs["status"][f], 0);
        let old_total: i64 = olds.iter().map(|rs| replicas(rs)).sum();
        let strategy = d["spec"]["strategy"]["type"]
            .as_str()
            .unwrap_or("RollingUpdate");
        let rolling = &d["spec"]["strategy"]["rollingUpdate"];
        let mut max_surge = int_or_percent(&rolling["maxSurge"], desired, true, 1);
        let mut max_unavailable = int_or_percent(&rolling["maxUnavailable"], desired, false, 0);
        if strategy == "Recreate" {
            max_surge = 0;
            max_unavailable = desired;
        } else if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let paused = d["spec"]["paused"] == true;

        // The target size of the new ReplicaSet.
        let new_current = new_rs.map_or(0, replicas);
        let new_target = if strategy == "Recreate" {
            let old_pods = olds
                .iter()
                .any(|rs| st(rs, "replicas") > 0 || replicas(rs) > 0);
            if old_pods { 0 } else { desired }
        } else if new_current >= desired {
            desired
        } else {
            let room = desired + max_surge - old_total - new_current;
            (new_current + room.max(0)).min(desired)
        };

        if !paused {
            match new_rs {
                None => {
                    let mut template = d["spec"]["template"].clone();
                    template["metadata"]["labels"][TEMPLATE_HASH] = json!(hash);
                    let mut selector = d["spec"]["selector"].clone();
                    selector["matchLabels"][TEMPLATE_HASH] = json!(hash);
                    let mut rs_labels = template["metadata"]["labels"].clone();
                    if !rs_labels.is_object() {
                        rs_labels = json!({});
                    }
                    let rs = json!({
                        "apiVersion": APPS,
                        "kind": "ReplicaSet",
                        "metadata": {
                            "name": format!("{}-{hash}", name(d)),
                            "namespace": ns,
                            "labels": rs_labels,
                            "annotations": {
                                REVISION: (max_revision + 1).to_string(),
                                "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                                "deployment.kubernetes.io/max-replicas": (desired + max_surge).to_string(),
                            },
                            "ownerReferences": [controller_ref(d, APPS, "Deployment")],
                        },
                        "spec": {
                            "replicas": new_target,
                            "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                            "selector": selector,
                            "template": template,
                        },
                    });
                    match self.api.create_object(rs) {
                        Ok(rs) => {
                            info!(deployment = %key(d), replicaset = name(&rs), "created replicaset")
                        }
                        Err(err) if err.code() == 409 => {
                            // A ReplicaSet of that name that is not ours: a hash collision.
                            let mut o = d.clone();
                            o["apiVersion"] = json!(APPS);
                            o["kind"] = json!("Deployment");
                            o["status"]["collisionCount"] = json!(collision.unwrap_or(0) + 1);
                            self.api.update_object_status(o)?;
                        }
                        Err(err) => return Err(err),
                    }
                }
                Some(rs) if replicas(rs) != new_target => {
                    self.merge_patch(
                        "ReplicaSet",
                        rs,
                        &json!({
                            "metadata": {"annotations": {
                                "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                                "deployment.kubernetes.io/max-replicas": (desired + max_surge).to_string(),
                            }},
                            "spec": {"replicas": new_target},
                        }),
                    );
                }
                Some(_) => {}
            }

            // Scale the old ReplicaSets down: unhealthy replicas first, then as far as
            // availability allows (desired - maxUnavailable must stay available).
            let available: i64 = rses.iter().map(|rs| st(rs, "availableReplicas")).sum();
            let min_available = desired - max_unavailable;
            let mut budget = (available - min_available).max(0);
            if strategy == "Recreate" {
                budget = i64::MAX;
            }
            for rs in &olds {
                let current = replicas(rs);
                if current == 0 {
                    continue;
                }
                let unhealthy = (current - st(rs, "availableReplicas")).max(0);
                let healthy_cut = budget.min(current - unhealthy.min(current));
                let target = current - unhealthy.min(current) - healthy_cut;
                budget -= healthy_cut;
                if target != current {
                    self.merge_patch("ReplicaSet", rs, &json!({"spec": {"replicas": target}}));
                }
            }
            // Old, empty ReplicaSets beyond the history limit go.
            let limit = int(&d["spec"]["revisionHistoryLimit"], 10).max(0);
            let mut empty: Vec<&Value> = olds
                .iter()
                .copied()
                .filter(|rs| replicas(rs) == 0 && st(rs, "replicas") == 0)
                .collect();
            empty.sort_by_key(|rs| revision(rs));
            let excess = empty
                .len()
                .saturating_sub(usize::try_from(limit).unwrap_or(0));
            for rs in empty.into_iter().take(excess) {
                let _ = self.api.delete_object(
                    APPS,
                    "ReplicaSet",
                    Some(ns),
                    name(rs),
                    &DeleteOptions::default(),
                );
            }
        }

        // Status, from the ReplicaSets' statuses.
        let sum = |f: &str| -> i64 { rses.iter().map(|rs| st(rs, f)).sum() };
        let updated = new_rs.map_or(0, |rs| st(rs, "replicas"));
        let available = sum("availableReplicas");
        let total = sum("replicas");
        let complete = new_rs
            .is_some_and(|rs| st(rs, "availableReplicas") == desired && replicas(rs) == desired)
            && total == desired
            && updated == desired;
        let new_name =
            new_rs.map_or_else(|| format!("{}-{hash}", name(d)), |rs| name(rs).to_owned());
        let minimum = available >= desired - max_unavailable;
        let mut conditions = vec![
            cond(
                "Available",
                minimum,
                if minimum {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                },
                if minimum {
                    "Deployment has minimum availability."
                } else {
                    "Deployment does not have minimum availability."
                },
            ),
            if paused {
                cond(
                    "Progressing",
                    false,
                    "DeploymentPaused",
                    "Deployment is paused",
                )
            } else if complete {
                cond(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                )
            } else {
                cond(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{new_name}\" is progressing."),
                )
            },
        ];
        for c in &mut conditions {
            c["lastUpdateTime"] = Value::Null;
        }
        let mut status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": sum("readyReplicas"),
            "availableReplicas": available,
            "conditions": conditions_with_times(&d["status"]["conditions"], conditions, &now_rfc3339()),
        });
        if desired - available > 0 {
            status["unavailableReplicas"] = json!(desired - available);
        }
        if let Some(c) = d["status"]["collisionCount"].as_i64() {
            status["collisionCount"] = json!(c);
        }
        if let Some(m) = status.as_object_mut() {
            m.retain(|k, v| k == "conditions" || k == "observedGeneration" || v != &json!(0));
        }
        self.write_status(d, "Deployment", status);
        Ok(())
    }

    /// ReplicaSets: as many active Pods as `spec.replicas`.
    pub(super) fn sync_replicasets(&self, snap: &Snapshot) {
        for rs in &snap.replicasets {
            if is_deleting(rs) {
                continue;
            }
            let desired = int(&rs["spec"]["replicas"], 1).max(0);
            let pods = owned_by(&snap.pods, rs);
            for p in pods
                .iter()
                .filter(|p| p["status"]["phase"] == "Failed" && !is_deleting(p))
            {
                self.delete_pod(p, "failed");
            }
            let mut alive: Vec<&Value> = pods.iter().copied().filter(|p| active(p)).collect();
            let count = i64::try_from(alive.len()).unwrap_or(i64::MAX);
            if count < desired {
                for _ in count..desired.min(count + 500) {
                    self.create_pod(
                        rs,
                        "ReplicaSet",
                        &rs["spec"]["template"],
                        None,
                        &BTreeMap::new(),
                        |_| {},
                    );
                }
            } else if count > desired {
                // Like upstream: unscheduled before scheduled, pending before running, not ready
                // before ready, newer before older.
                alive.sort_by_key(|p| {
                    (
                        !p["spec"]["nodeName"]
                            .as_str()
                            .unwrap_or_default()
                            .is_empty(),
                        p["status"]["phase"] == "Running",
                        pod_ready(p),
                        std::cmp::Reverse(meta(p, "creationTimestamp").to_owned()),
                    )
                });
                let excess = usize::try_from(count - desired).unwrap_or(0);
                for p in alive.iter().take(excess) {
                    self.delete_pod(p, "scaling down");
                }
            }
            let ready = i64::try_from(alive.iter().filter(|p| pod_ready(p)).count()).unwrap_or(0);
            let mut status = json!({
                "replicas": count,
                "fullyLabeledReplicas": count,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"]["generation"],
            });
            if let Some(m) = status.as_object_mut() {
                m.retain(|k, v| k == "replicas" || k == "observedGeneration" || v != &json!(0));
            }
            self.write_status(rs, "ReplicaSet", status);
        }
    }

    /// DaemonSets: one Pod on each eligible Node, rolling updates one Node at a time.
    pub(super) fn sync_daemonsets(&self, snap: &Snapshot) {
        for ds in &snap.daemonsets {
            if is_deleting(ds) {
                continue;
            }
            let template = &ds["spec"]["template"];
            let hash = template_hash(template, collision_count(ds));
            // The tolerations upstream adds to every DaemonSet Pod.
            let mut tolerations = template["spec"]["tolerations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (k, effect) in [
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unreachable", "NoExecute"),
                ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ] {
                tolerations.push(json!({"key": k, "operator": "Exists", "effect": effect}));
            }
            let tolerations = Value::Array(tolerations);
            let eligible: Vec<&Value> = snap
                .nodes
                .iter()
                .filter(|n| !is_deleting(n))
                .filter(|n| {
                    node_matches(n, &template["spec"])
                        && untolerated_taints(n, &tolerations).is_empty()
                })
                .collect();
            let pods: Vec<&Value> = owned_by(&snap.pods, ds)
                .into_iter()
                .filter(|p| active(p))
                .collect();
            let mut by_node: HashMap<&str, Vec<&Value>> = HashMap::new();
            for p in &pods {
                by_node
                    .entry(p["spec"]["nodeName"].as_str().unwrap_or_default())
                    .or_default()
                    .push(p);
            }
            let max_unavailable = int_or_percent(
                &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
                i64::try_from(eligible.len()).unwrap_or(0),
                true,
                1,
            )
            .max(1);
            let rolling = ds["spec"]["updateStrategy"]["type"]
                .as_str()
                .unwrap_or("RollingUpdate")
                == "RollingUpdate";
            let unavailable = eligible
                .iter()
                .filter(|n| {
                    !by_node
                        .get(name(n))
                        .is_some_and(|ps| ps.iter().any(|p| pod_ready(p)))
                })
                .count();
            let mut budget = usize::try_from(max_unavailable)
                .unwrap_or(1)
                .saturating_sub(unavailable);
            let (mut scheduled, mut ready, mut updated) = (0, 0, 0);
            let generation = ds["metadata"]["generation"]
                .as_i64()
                .unwrap_or(1)
                .to_string();
            for node in &eligible {
                let node_name = name(node);
                match by_node.get(node_name).map(Vec::as_slice) {
                    None | Some([]) => {
                        let extra: BTreeMap<String, String> = [
                            (REVISION_HASH.to_owned(), hash.clone()),
                            ("pod-template-generation".to_owned(), generation.clone()),
                        ]
                        .into_iter()
                        .collect();
                        let tolerations = tolerations.clone();
                        self.create_pod(ds, "DaemonSet", template, None, &extra, |spec| {
                            spec["nodeName"] = json!(node_name);
                            spec["tolerations"] = tolerations;
                            spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
                                json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]});
                        });
                    }
                    Some(ps) => {
                        scheduled += 1;
                        for extra in &ps[1..] {
                            self.delete_pod(extra, "duplicate daemon pod");
                        }
                        let p = ps[0];
                        if pod_ready(p) {
                            ready += 1;
                        }
                        if p["metadata"]["labels"][REVISION_HASH] == hash.as_str() {
                            updated += 1;
                        } else if rolling && budget > 0 && pod_ready(p) {
                            budget -= 1;
                            self.delete_pod(p, "outdated daemon pod");
                        }
                    }
                }
            }
            let eligible_names: Vec<&str> = eligible.iter().map(|n| name(n)).collect();
            let mut misscheduled = 0;
            for p in &pods {
                if !eligible_names.contains(&p["spec"]["nodeName"].as_str().unwrap_or_default()) {
                    misscheduled += 1;
                    self.delete_pod(p, "node not eligible");
                }
            }
            let desired = eligible.len();
            let mut status = json!({
                "currentNumberScheduled": scheduled,
                "numberMisscheduled": misscheduled,
                "desiredNumberScheduled": desired,
                "numberReady": ready,
                "observedGeneration": ds["metadata"]["generation"],
                "updatedNumberScheduled": updated,
                "numberAvailable": ready,
                "numberUnavailable": desired.saturating_sub(ready),
            });
            if let Some(m) = status.as_object_mut() {
                m.retain(|k, v| {
                    !matches!(
                        k.as_str(),
                        "updatedNumberScheduled" | "numberAvailable" | "numberUnavailable"
                    ) || v != &json!(0)
                });
            }
            self.write_status(ds, "DaemonSet", status);
        }
    }

    /// StatefulSets: Pods `<name>-0..n`, created in order (OrderedReady) or at once (Parallel),
    /// removed from the highest ordinal, updated from the highest ordinal down.
    pub(super) fn sync_statefulsets(&self, snap: &Snapshot) {
        for sts in &snap.statefulsets {
            if is_deleting(sts) {
                continue;
            }
            let sts_name = name(sts);
            let desired = int(&sts["spec"]["replicas"], 1).max(0);
            let template = &sts["spec"]["template"];
            let revision = format!(
                "{sts_name}-{}",
                template_hash(template, collision_count(sts))
            );
            let ordered = sts["spec"]["podManagementPolicy"]
                .as_str()
                .unwrap_or("OrderedReady")
                == "OrderedReady";
            let pods = owned_by(&snap.pods, sts);
            let mut by_ordinal: BTreeMap<i64, &Value> = BTreeMap::new();
            for p in &pods {
                if let Some(ord) = name(p)
                    .strip_prefix(sts_name)
                    .and_then(|s| s.strip_prefix('-'))
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    by_ordinal.insert(ord, p);
                }
            }
            let terminating = pods.iter().any(|p| is_deleting(p));
            for p in pods
                .iter()
                .filter(|p| p["status"]["phase"] == "Failed" && !is_deleting(p))
            {
                self.delete_pod(p, "failed");
            }
            // Create the missing Pods.
            let mut all_ready_below = true;
            for ord in 0..desired {
                match by_ordinal.get(&ord) {
                    Some(p) => all_ready_below &= pod_ready(p) && !is_deleting(p),
                    None => {
                        if ordered && !all_ready_below {
                            break;
                        }
                        let pod_name = format!("{sts_name}-{ord}");
                        let extra: BTreeMap<String, String> = [
                            (REVISION_HASH.to_owned(), revision.clone()),
                            (
                                "statefulset.kubernetes.io/pod-name".to_owned(),
                                pod_name.clone(),
                            ),
                            ("apps.kubernetes.io/pod-index".to_owned(), ord.to_string()),
                        ]
                        .into_iter()
                        .collect();
                        let service = sts["spec"]["serviceName"].clone();
                        let hostname = pod_name.clone();
                        self.create_pod(
                            sts,
                            "StatefulSet",
                            template,
                            Some(&pod_name),
                            &extra,
                            |spec| {
                                spec["hostname"] = json!(hostname);
                                if service.is_string() {
                                    spec["subdomain"] = service;
                                }
                            },
                        );
                        all_ready_below = false;
                        if ordered {
                            break;
                        }
                    }
                }
            }
            let complete = (0..desired).all(|o| by_ordinal.get(&o).is_some_and(|p| pod_ready(p)));
            // Scale down from the highest ordinal, one at a time when ordered.
            if !terminating || !ordered {
                let extras: Vec<&&Value> =
                    by_ordinal.range(desired..).rev().map(|(_, p)| p).collect();
                for p in extras
                    .into_iter()
                    .take(if ordered { 1 } else { usize::MAX })
                {
                    if !is_deleting(p) && (complete || !ordered) {
                        self.delete_pod(p, "scaling down");
                    }
                }
            }
            // Rolling update from the highest ordinal down, one Pod at a time.
            let partition = int(
                &sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
                0,
            );
            let rolling = sts["spec"]["updateStrategy"]["type"]
                .as_str()
                .unwrap_or("RollingUpdate")
                == "RollingUpdate";
            // `range` needs start <= end: a partition above the replicas updates nothing.
            let first = partition.clamp(0, desired);
            if rolling
                && complete
                && !terminating
                && let Some((_, p)) = by_ordinal
                    .range(first..desired)
                    .rev()
                    .find(|(_, p)| p["metadata"]["labels"][REVISION_HASH] != revision.as_str())
            {
                self.delete_pod(p, "outdated revision");
            }
            let live: Vec<&Value> = pods.iter().copied().filter(|p| active(p)).collect();
            let count = |f: &dyn Fn(&Value) -> bool| live.iter().filter(|p| f(p)).count();
            let updated = count(&|p| p["metadata"]["labels"][REVISION_HASH] == revision.as_str());
            let ready = count(&pod_ready);
            let current_revision =
                if updated == live.len() && live.len() == usize::try_from(desired).unwrap_or(0) {
                    revision.clone()
                } else {
                    sts["status"]["currentRevision"]
                        .as_str()
                        .unwrap_or(&revision)
                        .to_owned()
                };
            let current =
                count(&|p| p["metadata"]["labels"][REVISION_HASH] == current_revision.as_str());
            let mut status = json!({
                "observedGeneration": sts["metadata"]["generation"],
                "replicas": live.len(),
                "readyReplicas": ready,
                "currentReplicas": current,
                "updatedReplicas": updated,
                "availableReplicas": ready,
                "currentRevision": current_revision,
                "updateRevision": revision,
                "collisionCount": sts["status"]["collisionCount"].as_i64().unwrap_or(0),
            });
            if let Some(m) = status.as_object_mut() {
                m.retain(|k, v| {
                    !matches!(
                        k.as_str(),
                        "readyReplicas" | "currentReplicas" | "updatedReplicas"
                    ) || v != &json!(0)
                });
            }
            self.write_status(sts, "StatefulSet", status);
        }
    }
}
