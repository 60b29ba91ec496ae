//! The MachineHealthCheck controller: a selected Machine is unhealthy when its Node has matched
//! one of `spec.checks.unhealthyNodeConditions` for longer than that condition's timeout, when
//! it has no Node past `spec.checks.nodeStartupTimeoutSeconds` (default 10 minutes), when its
//! Node was deleted, or when it carries the `cluster.x-k8s.io/remediate-machine` annotation.
//!
//! Unhealthy Machines get `HealthCheckSucceeded=False` and `OwnerRemediated=False`; while the
//! unhealthy count is within `spec.remediation.triggerIf` (`unhealthyInRange` or
//! `unhealthyLessThanOrEqualTo`), worker Machines are deleted so their MachineSet recreates
//! them. Control-plane Machines are only marked: the KubeadmControlPlane remediates them on its
//! own terms (quorum).

use std::time::Duration;

use serde_json::{Value, json};
use tracing::info;

use super::machineset::{age, selector_string};
use super::{
    CAPI, CONTROL_PLANE_LABEL, Cond, Ctx, Result, condition, delete, deleting, list_selected, name,
    ns, set_conditions, write_status,
};

/// The annotation that asks for a Machine's remediation.
pub const REMEDIATE_ANNOTATION: &str = "cluster.x-k8s.io/remediate-machine";
/// Upstream's default node startup timeout.
const DEFAULT_NODE_STARTUP: Duration = Duration::from_secs(600);

/// Why a Machine is unhealthy.
#[derive(Debug, Clone, PartialEq)]
struct Unhealthy {
    reason: &'static str,
    message: String,
}

/// Whether `unhealthy` of `expected` Machines may be remediated, and how many more could be.
fn remediation_allowed(mhc: &Value, expected: i64, unhealthy: i64) -> (bool, i64) {
    let trigger = &mhc["spec"]["remediation"]["triggerIf"];
    if let Some(range) = trigger["unhealthyInRange"].as_str() {
        let bounds = range
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)));
        return match bounds {
            Some((lo, hi)) => (unhealthy >= lo && unhealthy <= hi, (hi - unhealthy).max(0)),
            None => (false, 0),
        };
    }
    let max = match &trigger["unhealthyLessThanOrEqualTo"] {
        Value::Number(n) => n.as_i64().unwrap_or(expected),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            // Upstream rounds the percentage down.
            Some(p) => p * expected / 100,
            None => s.parse().unwrap_or(expected),
        },
        _ => expected,
    };
    (unhealthy <= max, (max - unhealthy).max(0))
}

/// The newest of the timestamps the node startup timeout counts from, as an age.
fn startup_age(machine: &Value, cluster: Option<&Value>) -> Duration {
    let cond_time = |o: &Value, t: &str| {
        o["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t && c["status"] == "True"))
            .map(|c| age(&c["lastTransitionTime"]))
    };
    let mut ages = vec![age(&machine["metadata"]["creationTimestamp"])];
    ages.extend(cond_time(machine, "InfrastructureReady"));
    if let Some(c) = cluster {
        ages.extend(cond_time(c, "InfrastructureReady"));
        ages.extend(cond_time(c, "ControlPlaneInitialized"));
    }
    ages.into_iter().min().unwrap_or_default()
}

/// Checks one Machine; `Err(wait)` when it is healthy but a timeout may expire in `wait`.
fn check(
    ctx: &Ctx<'_>,
    mhc: &Value,
    machine: &Value,
    cluster: Option<&Value>,
    nodes: Option<&[Value]>,
) -> std::result::Result<Option<Unhealthy>, Duration> {
    if !machine["metadata"]["annotations"][REMEDIATE_ANNOTATION].is_null() {
        return Ok(Some(Unhealthy {
            reason: "HasRemediateAnnotation",
            message: "Marked for remediation via cluster.x-k8s.io/remediate-machine annotation"
                .into(),
        }));
    }
    let speed = ctx.world.speed();
    let checks = &mhc["spec"]["checks"];
    let node_name = machine["status"]["nodeRef"]["name"].as_str();
    let node = node_name
        .and_then(|n| nodes.and_then(|all| all.iter().find(|node| node["metadata"]["name"] == n)));
    let Some(node) = node else {
        if node_name.is_some() && nodes.is_some() {
            return Ok(Some(Unhealthy {
                reason: "NodeDeleted",
                message: format!("Node {} has been deleted", node_name.unwrap_or_default()),
            }));
        }
        // No Node yet: the startup timeout counts once the control plane is initialized.
        let initialized = cluster
            .is_some_and(|c| c["status"]["initialization"]["controlPlaneInitialized"] == true);
        let timeout = checks["nodeStartupTimeoutSeconds"]
            .as_u64()
            .map_or(DEFAULT_NODE_STARTUP, Duration::from_secs);
        if !initialized || timeout.is_zero() {
            return Err(Duration::MAX);
        }
        let limit = speed.delay(timeout);
        let waited = startup_age(machine, cluster);
        return if waited > limit {
            Ok(Some(Unhealthy {
                reason: "NodeStartupTimeout",
                message: format!("Node failed to report startup in {}s", timeout.as_secs()),
            }))
        } else {
            Err(limit - waited)
        };
    };
    let mut wait = Duration::MAX;
    for uc in checks["unhealthyNodeConditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let matched = node["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == uc["type"] && c["status"] == uc["status"])
        });
        let Some(c) = matched else {
            continue;
        };
        let timeout = Duration::from_secs(uc["timeoutSeconds"].as_u64().unwrap_or(0));
        let limit = speed.delay(timeout);
        let since = age(&c["lastTransitionTime"]);
        if since > limit {
            return Ok(Some(Unhealthy {
                reason: "UnhealthyNode",
                message: format!(
                    "Condition {} on Node is reporting status {} for more than {}s",
                    uc["type"].as_str().unwrap_or_default(),
                    uc["status"].as_str().unwrap_or_default(),
                    timeout.as_secs()
                ),
            }));
        }
        wait = wait.min(limit - since);
    }
    Err(wait)
}

/// Writes the health conditions on a Machine, if they changed. `OwnerRemediated` is only
/// written on Machines being remediated now: the Machine controller keeps
/// `HealthCheckSucceeded` but rewrites the others, and rewriting it back every pass would
/// make passes trigger each other.
fn mark(ctx: &Ctx<'_>, m: &Value, unhealthy: Option<&Unhealthy>, remediating: bool) -> Result {
    let want_health = if unhealthy.is_some() { "False" } else { "True" };
    let want_owner = remediating.then_some("False");
    if condition(m, "HealthCheckSucceeded") == Some(want_health)
        && (want_owner.is_none() || condition(m, "OwnerRemediated") == want_owner)
    {
        return Ok(());
    }
    let mut conds = vec![match unhealthy {
        None => Cond::new("HealthCheckSucceeded", true, "Succeeded", ""),
        Some(u) => Cond::new("HealthCheckSucceeded", false, u.reason, &*u.message),
    }];
    if remediating {
        conds.push(Cond::new(
            "OwnerRemediated",
            false,
            "WaitingForRemediation",
            "Waiting for remediation",
        ));
    }
    let mut keep: Vec<Value> = m["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    keep.retain(|c| c["type"] != "HealthCheckSucceeded" && c["type"] != "OwnerRemediated");
    let mut status = m["status"].clone();
    set_conditions(
        &mut status,
        &m["status"],
        &m["metadata"]["generation"],
        &conds,
    );
    if let Some(new) = status["conditions"].as_array().cloned() {
        keep.extend(new);
    }
    status["conditions"] = json!(keep);
    write_status(ctx.api, m, status)
}

/// Reconciles one MachineHealthCheck.
pub fn reconcile(ctx: &Ctx<'_>, mhc: &Value) -> Result {
    if deleting(mhc) || ctx.paused(mhc) {
        return Ok(());
    }
    let namespace = ns(mhc);
    let Some(cluster_name) = mhc["spec"]["clusterName"].as_str() else {
        return Ok(());
    };
    let cluster = ctx.cluster(namespace, cluster_name);
    let machines: Vec<Value> = list_selected(
        ctx.api,
        CAPI,
        "Machine",
        Some(namespace),
        Some(selector_string(&mhc["spec"]["selector"])),
    )
    .into_iter()
    .filter(|m| m["spec"]["clusterName"] == cluster_name && !deleting(m))
    .collect();
    let nodes = ctx
        .world
        .workload_cluster(namespace, cluster_name)
        .map(|wc| super::list(&wc.api(), "v1", "Node", None));
    let mut unhealthy: Vec<(&Value, Unhealthy)> = Vec::new();
    let mut healthy: Vec<&Value> = Vec::new();
    let mut next = Duration::MAX;
    for m in &machines {
        match check(ctx, mhc, m, cluster, nodes.as_deref()) {
            Ok(Some(u)) => unhealthy.push((m, u)),
            Ok(None) => healthy.push(m),
            Err(wait) => {
                next = next.min(wait);
                healthy.push(m);
            }
        }
    }
    if next < Duration::MAX {
        // A timeout may expire before anything else changes; `wait` is already scaled.
        ctx.requeue_at(std::time::Instant::now() + next + Duration::from_millis(10));
    }
    let expected = i64::try_from(machines.len()).unwrap_or(0);
    let bad = i64::try_from(unhealthy.len()).unwrap_or(0);
    let (allowed, remaining) = remediation_allowed(mhc, expected, bad);
    for m in &healthy {
        mark(ctx, m, None, false)?;
    }
    for (m, u) in &unhealthy {
        let control_plane = !m["metadata"]["labels"][CONTROL_PLANE_LABEL].is_null();
        let remediate = allowed && !control_plane;
        mark(ctx, m, Some(u), remediate)?;
        if remediate {
            info!(
                mhc = name(mhc),
                machine = name(m),
                reason = u.reason,
                "Remediating unhealthy machine"
            );
            delete(ctx.api, CAPI, "Machine", namespace, name(m))?;
        }
    }
    let mut status = json!({
        "observedGeneration": mhc["metadata"]["generation"],
        "expectedMachines": expected,
        "currentHealthy": healthy.len(),
        "remediationsAllowed": if allowed { remaining } else { 0 },
        "targets": machines.iter().map(name).collect::<Vec<_>>(),
    });
    let conds = [
        Cond::new(
            "RemediationAllowed",
            allowed,
            if allowed {
                "RemediationAllowed"
            } else {
                "TooManyUnhealthy"
            },
            if allowed {
                String::new()
            } else {
                format!(
                    "Remediation is not allowed, the number of not started or unhealthy machines exceeds the limit ({bad} of {expected} unhealthy)"
                )
            },
        ),
        Cond::new("Paused", false, "NotPaused", ""),
    ];
    set_conditions(
        &mut status,
        &mhc["status"],
        &mhc["metadata"]["generation"],
        &conds,
    );
    write_status(ctx.api, mhc, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remediation_thresholds_follow_the_trigger() {
        let pct =
            json!({"spec": {"remediation": {"triggerIf": {"unhealthyLessThanOrEqualTo": "40%"}}}});
        assert_eq!(remediation_allowed(&pct, 5, 2), (true, 0));
        assert_eq!(remediation_allowed(&pct, 5, 3), (false, 0));
        let range = json!({"spec": {"remediation": {"triggerIf": {"unhealthyInRange": "[1-2]"}}}});
        assert_eq!(remediation_allowed(&range, 5, 0), (false, 2));
        assert_eq!(remediation_allowed(&range, 5, 2), (true, 0));
        assert_eq!(remediation_allowed(&json!({}), 3, 3), (true, 0));
        let n = json!({"spec": {"remediation": {"triggerIf": {"unhealthyLessThanOrEqualTo": 1}}}});
        assert_eq!(remediation_allowed(&n, 3, 1), (true, 0));
        assert_eq!(remediation_allowed(&n, 3, 2), (false, 0));
    }
}
