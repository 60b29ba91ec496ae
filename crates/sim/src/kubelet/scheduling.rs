//! Scheduling: which Nodes a Pod may run on (readiness, taints and tolerations, nodeSelector,
//! required node affinity) and the choice among them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::objects::{condition_true, expression_matches, is_deleting, labels, name, string_map};

/// Whether the Node's `Ready` condition is `True`.
pub(crate) fn node_ready(node: &Value) -> bool {
    condition_true(node, "Ready")
}

/// Whether `toleration` tolerates `taint`, with upstream's rules (empty effect matches every
/// effect; `Exists` with an empty key matches every taint).
pub(crate) fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = toleration["effect"].as_str().unwrap_or_default();
    if !effect.is_empty() && Some(effect) != taint["effect"].as_str() {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or_default();
    let taint_key = taint["key"].as_str().unwrap_or_default();
    match toleration["operator"].as_str().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint_key,
        _ => {
            key == taint_key
                && toleration["value"].as_str().unwrap_or_default()
                    == taint["value"].as_str().unwrap_or_default()
        }
    }
}

/// The Node's `NoSchedule`/`NoExecute` taints that none of `tolerations` tolerate.
pub(crate) fn untolerated_taints<'a>(node: &'a Value, tolerations: &Value) -> Vec<&'a Value> {
    let tolerations = tolerations
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    node["spec"]["taints"]
        .as_array()
        .map(|taints| {
            taints
                .iter()
                .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
                .filter(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the Node satisfies the pod spec's `nodeSelector` and required node affinity.
pub(crate) fn node_matches(node: &Value, pod_spec: &Value) -> bool {
    let node_labels = labels(node);
    let selector_ok = string_map(&pod_spec["nodeSelector"])
        .iter()
        .all(|(k, v)| node_labels.get(k) == Some(v));
    let terms = &pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    // Terms are ORed, the requirements within a term ANDed.
    let affinity_ok = terms.as_array().is_none_or(|terms| {
        terms.iter().any(|term| {
            let fields: BTreeMap<String, String> =
                [("metadata.name".to_owned(), name(node).to_owned())]
                    .into_iter()
                    .collect();
            let all = |list: &Value, values: &BTreeMap<String, String>| {
                list.as_array().is_none_or(|reqs| {
                    reqs.iter().all(|r| {
                        let key = r["key"].as_str().unwrap_or_default();
                        expression_matches(
                            key,
                            r["operator"].as_str().unwrap_or_default(),
                            &r["values"],
                            values.get(key),
                        )
                    })
                })
            };
            all(&term["matchExpressions"], &node_labels) && all(&term["matchFields"], &fields)
        })
    });
    selector_ok && affinity_ok
}

/// Why a Node cannot take a Pod, for the `PodScheduled=False` message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Misfit {
    NotReady,
    Unschedulable,
    Taint(String),
    Selector,
}

/// Checks whether `node` can take a Pod with `pod_spec`.
pub(crate) fn fit(node: &Value, pod_spec: &Value) -> Result<(), Misfit> {
    if !node_ready(node) || is_deleting(node) {
        return Err(Misfit::NotReady);
    }
    if node["spec"]["unschedulable"] == true {
        return Err(Misfit::Unschedulable);
    }
    if let Some(taint) = untolerated_taints(node, &pod_spec["tolerations"]).first() {
        return Err(Misfit::Taint(format!(
            "{{{}: {}}}",
            taint["key"].as_str().unwrap_or_default(),
            taint["value"].as_str().unwrap_or_default()
        )));
    }
    if !node_matches(node, pod_spec) {
        return Err(Misfit::Selector);
    }
    Ok(())
}

/// Picks the feasible Node with the fewest Pods (`load`), or explains, like kube-scheduler,
/// why none fits: `0/3 nodes are available: 1 node(s) had untolerated taint {…}, …`.
pub(crate) fn choose<'a>(
    nodes: &'a [Value],
    pod_spec: &Value,
    load: &BTreeMap<String, usize>,
) -> Result<&'a Value, String> {
    let mut misfits: BTreeMap<Misfit, usize> = BTreeMap::new();
    let mut best: Option<(&Value, usize)> = None;
    for node in nodes {
        match fit(node, pod_spec) {
            Ok(()) => {
                let n = load.get(name(node)).copied().unwrap_or(0);
                if best.is_none_or(|(_, b)| n < b) {
                    best = Some((node, n));
                }
            }
            Err(m) => *misfits.entry(m).or_default() += 1,
        }
    }
    if let Some((node, _)) = best {
        return Ok(node);
    }
    let reasons: Vec<String> = misfits
        .iter()
        .map(|(m, n)| match m {
            Misfit::NotReady => {
                format!("{n} node(s) had untolerated taint {{node.kubernetes.io/not-ready: }}")
            }
            Misfit::Unschedulable => format!("{n} node(s) were unschedulable"),
            Misfit::Taint(t) => format!("{n} node(s) had untolerated taint {t}"),
            Misfit::Selector => format!("{n} node(s) didn't match Pod's node affinity/selector"),
        })
        .collect();
    let total = nodes.len();
    if reasons.is_empty() {
        Err(format!(
            "0/{total} nodes are available: no nodes available to schedule pods."
        ))
    } else {
        Err(format!(
            "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling.",
            reasons.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn control_plane_taint_needs_a_toleration() {
        let taint = json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"});
        assert!(tolerates(
            &json!({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}),
            &taint
        ));
        assert!(tolerates(&json!({"operator": "Exists"}), &taint));
        assert!(!tolerates(
            &json!({"key": "other", "operator": "Exists"}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoExecute", "operator": "Exists"}),
            &taint
        ));
    }

    #[test]
    fn unschedulable_pods_get_a_scheduler_message() {
        let node = json!({
            "metadata": {"name": "cp", "labels": {}},
            "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        });
        let err = choose(std::slice::from_ref(&node), &json!({}), &BTreeMap::new())
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("0/1 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"), "{err}");
        let ok = choose(
            std::slice::from_ref(&node),
            &json!({"tolerations": [{"operator": "Exists"}]}),
            &BTreeMap::new(),
        );
        assert!(ok.is_ok());
    }
}
