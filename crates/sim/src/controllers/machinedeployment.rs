//! The MachineDeployment controller: one MachineSet per template, named `<md>-<hash>` with the
//! hash computed over the Machine template (as upstream: FNV-32a, then the safe alphabet),
//! scaling, the RollingUpdate (maxSurge/maxUnavailable, defaults 1/0) and OnDelete rollout
//! strategies, `spec.rollout.after`, and the status counts, phase and v1beta2 conditions.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::info;

use super::machineset::{
    DEPLOYMENT_NAME_LABEL, TEMPLATE_HASH_LABEL, creation, owned_by, selector_string,
};
use super::{
    CAPI, CLUSTER_NAME_LABEL, Cond, Ctx, Result, delete, deleting, list, list_selected, name, ns,
    owner_ref, set_conditions, write_status,
};
use crate::controllers::machine::machine_ready;

/// The annotation on a MachineSet carrying the hash of the template alone (its name may also
/// cover `rollout.after`).
pub(crate) const TEMPLATE_HASH_ANNOTATION: &str = "fledge-sim.fledge.dev/template-hash";

/// FNV-32a of `data`, the hash upstream's `ComputeSpewHash` uses.
fn fnv32a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Upstream's `rand.SafeEncodeString`: every character mapped into an alphabet without vowels
/// or look-alike characters, so names never spell words.
fn safe_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// The hash naming the MachineSet of `template` (plus `salt`, for `rollout.after`).
pub fn template_hash(template: &Value, salt: &str) -> String {
    let mut text = String::new();
    canonical(template, &mut text);
    text.push_str(salt);
    safe_encode(&fnv32a(text.as_bytes()).to_string())
}

/// Serializes `v` with object keys sorted (objects may keep insertion order), so equal
/// templates hash equally.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// An int-or-percent value resolved against `total` (percentages round up when `up`).
fn int_or_percent(v: &Value, total: i64, default: i64, up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(default),
        Value::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(p) if up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(default),
        },
        _ => default,
    }
}

fn replicas(o: &Value) -> i64 {
    o["spec"]["replicas"].as_i64().unwrap_or(0)
}

/// The desired replicas: `spec.replicas`, else the autoscaler's minimum, else 1 (upstream's
/// defaulting webhook).
fn desired_replicas(md: &Value) -> i64 {
    md["spec"]["replicas"].as_i64().unwrap_or_else(|| {
        md["metadata"]["annotations"]["cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1)
    })
}

fn set_replicas(ctx: &Ctx<'_>, ms: &Value, n: i64) -> Result {
    if replicas(ms) == n && !ms["spec"]["replicas"].is_null() {
        return Ok(());
    }
    info!(
        machineset = name(ms),
        from = replicas(ms),
        to = n,
        "Scaling machine set"
    );
    let mut ms = ms.clone();
    ms["spec"]["replicas"] = json!(n);
    ctx.api.update_object(ms).map(|_| ())
}

/// Reconciles one MachineDeployment.
pub fn reconcile(ctx: &Ctx<'_>, md: &Value) -> Result {
    // Deleting: the garbage collector removes its MachineSets and their Machines.
    if deleting(md) || ctx.paused(md) {
        return Ok(());
    }
    let namespace = ns(md);
    let Some(cluster_name) = super::cluster_name_of(md).map(str::to_owned) else {
        return Ok(());
    };
    let desired = desired_replicas(md);
    let template = &md["spec"]["template"];
    let base_hash = template_hash(&template["spec"], "");
    let listed_sets = list(ctx.api, CAPI, "MachineSet", Some(namespace));
    let mut sets: Vec<Value> = owned_by(&listed_sets, md).into_iter().cloned().collect();
    sets.sort_by_key(creation);
    // `rollout.after`: once passed, Machine sets created before it are outdated too.
    let rollout_after = md["spec"]["rollout"]["after"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let after_passed = rollout_after.is_some_and(|t| t <= chrono::Utc::now());
    if let Some(t) = rollout_after.filter(|_| !after_passed)
        && let Ok(wait) = (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std()
    {
        // Wall-clock time: the deadline is a real timestamp, not a simulated delay.
        ctx.requeue_at(std::time::Instant::now() + wait);
    }
    let is_current = |ms: &Value| {
        ms["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION] == base_hash.as_str()
            && (!after_passed
                || rollout_after.is_some_and(|t| {
                    ms["metadata"]["creationTimestamp"]
                        .as_str()
                        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                        .is_some_and(|c| c >= t)
                }))
    };
    let current = sets.iter().rev().find(|s| is_current(s)).cloned();
    let old: Vec<Value> = sets
        .iter()
        .filter(|s| current.as_ref().is_none_or(|c| name(c) != name(s)))
        .cloned()
        .collect();
    let machines_all = list_selected(
        ctx.api,
        CAPI,
        "Machine",
        Some(namespace),
        Some(selector_string(&md["spec"]["selector"])),
    );
    let machines_of = |ms: &Value| -> Vec<Value> {
        owned_by(&machines_all, ms)
            .into_iter()
            .filter(|m| !deleting(m))
            .cloned()
            .collect()
    };
    let strategy = &md["spec"]["rollout"]["strategy"];
    let on_delete = strategy["type"] == "OnDelete";
    let old_alive: i64 = old
        .iter()
        .map(|s| i64::try_from(machines_of(s).len()).unwrap_or(0))
        .sum();
    let current = match current {
        Some(c) => c,
        None => {
            let hash = if after_passed && !sets.is_empty() {
                template_hash(
                    &template["spec"],
                    md["spec"]["rollout"]["after"].as_str().unwrap_or_default(),
                )
            } else {
                base_hash.clone()
            };
            let ms_name = format!("{}-{hash}", name(md));
            // A fresh deployment starts at full size; a rollout starts empty and surges.
            let initial = if old.is_empty() { desired } else { 0 };
            let mut labels = md["spec"]["selector"]["matchLabels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[CLUSTER_NAME_LABEL] = json!(cluster_name);
            labels[DEPLOYMENT_NAME_LABEL] = json!(name(md));
            labels[TEMPLATE_HASH_LABEL] = json!(hash);
            let mut selector = md["spec"]["selector"].clone();
            selector["matchLabels"][TEMPLATE_HASH_LABEL] = json!(hash);
            let mut ms_template = template.clone();
            ms_template["metadata"]["labels"][TEMPLATE_HASH_LABEL] = json!(hash);
            ms_template["metadata"]["labels"][DEPLOYMENT_NAME_LABEL] = json!(name(md));
            info!(machinedeployment = name(md), machineset = %ms_name, replicas = initial, "Creating machine set");
            let created = ctx.api.create_object(json!({
                "apiVersion": CAPI,
                "kind": "MachineSet",
                "metadata": {
                    "name": ms_name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": {TEMPLATE_HASH_ANNOTATION: base_hash},
                    "ownerReferences": [owner_ref(md, true)],
                },
                "spec": {
                    "clusterName": cluster_name,
                    "replicas": initial,
                    "selector": selector,
                    "template": ms_template,
                },
            }));
            match created {
                Ok(mut c) => {
                    c["apiVersion"] = json!(CAPI);
                    c["kind"] = json!("MachineSet");
                    c
                }
                // Another pass created it: the next pass sees it.
                Err(e) if e.is_conflict() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    let mut all_sets = old.clone();
    all_sets.push(current.clone());
    let mut rolling_out = !old.is_empty();
    if old.is_empty() {
        // Plain scaling.
        set_replicas(ctx, &current, desired)?;
    } else if on_delete {
        // Old Machines go only when someone deletes them; the new set fills the gap.
        for s in &old {
            let alive = i64::try_from(machines_of(s).len()).unwrap_or(0);
            if replicas(s) > alive {
                set_replicas(ctx, s, alive)?;
            }
        }
        set_replicas(ctx, &current, (desired - old_alive).max(0))?;
    } else {
        let rolling = &strategy["rollingUpdate"];
        let max_surge = int_or_percent(&rolling["maxSurge"], desired, 1, true).max(0);
        let mut max_unavailable =
            int_or_percent(&rolling["maxUnavailable"], desired, 0, false).max(0);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let total_spec: i64 = all_sets.iter().map(replicas).sum();
        // Scale the new set up within the surge.
        let room = desired + max_surge - total_spec;
        let new_replicas = (replicas(&current) + room.max(0)).min(desired);
        if new_replicas > replicas(&current) {
            set_replicas(ctx, &current, new_replicas)?;
        }
        // Scale old sets down while enough Machines stay available; Machines a set is
        // about to delete no longer count.
        let mut available: i64 = 0;
        for s in &all_sets {
            let ms_machines = machines_of(s);
            let ready =
                i64::try_from(ms_machines.iter().filter(|m| machine_ready(m)).count()).unwrap_or(0);
            let surplus = (i64::try_from(ms_machines.len()).unwrap_or(0) - replicas(s)).max(0);
            available += (ready - surplus).max(0);
        }
        let min_available = desired - max_unavailable;
        let mut budget = (available - min_available).max(0);
        for s in &old {
            if budget == 0 {
                break;
            }
            let cut = budget.min(replicas(s));
            if cut > 0 {
                set_replicas(ctx, s, replicas(s) - cut)?;
                budget -= cut;
            }
        }
    }
    // Old sets that are empty are done.
    for s in &old {
        if replicas(s) == 0 && owned_by(&machines_all, s).is_empty() {
            info!(machineset = name(s), "Deleting old machine set");
            delete(ctx.api, CAPI, "MachineSet", namespace, name(s))?;
        }
    }
    if old.is_empty() || old_alive == 0 && old.iter().all(|s| replicas(s) == 0) {
        rolling_out = false;
    }
    // Status.
    let current_machines = machines_of(&current);
    let all_machines: Vec<Value> = all_sets.iter().flat_map(machines_of).collect();
    let count = i64::try_from(all_machines.len()).unwrap_or(0);
    let ready =
        i64::try_from(all_machines.iter().filter(|m| machine_ready(m)).count()).unwrap_or(0);
    let up_to_date = current_machines.len();
    let rolling = &strategy["rollingUpdate"];
    let max_unavailable = if on_delete {
        0
    } else {
        int_or_percent(&rolling["maxUnavailable"], desired, 0, false).max(0)
    };
    let available = ready >= desired - max_unavailable;
    let scaling_up = count < desired;
    let scaling_down = count > desired && !rolling_out;
    let phase = if scaling_up {
        "ScalingUp"
    } else if count > desired {
        "ScalingDown"
    } else {
        "Running"
    };
    let all_ready = ready == count;
    let all_up_to_date = i64::try_from(up_to_date).unwrap_or(0) == count;
    let old_status = &md["status"];
    let mut status = json!({
        "observedGeneration": md["metadata"]["generation"],
        "selector": selector_string(&md["spec"]["selector"]),
        "replicas": count,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "upToDateReplicas": up_to_date,
        "phase": phase,
    });
    let msg = |b: bool, s: String| if b { s } else { String::new() };
    let conds = [
        Cond::new(
            "Available",
            available,
            if available {
                "Available"
            } else {
                "NotAvailable"
            },
            msg(
                !available,
                format!(
                    "{ready} available replicas, at least {} required",
                    desired - max_unavailable
                ),
            ),
        ),
        Cond::new(
            "MachinesReady",
            all_ready,
            if all_ready { "Ready" } else { "NotReady" },
            "",
        ),
        Cond::new(
            "MachinesUpToDate",
            all_up_to_date,
            if all_up_to_date {
                "UpToDate"
            } else {
                "NotUpToDate"
            },
            "",
        ),
        Cond::new(
            "RollingOut",
            rolling_out,
            if rolling_out {
                "RollingOut"
            } else {
                "NotRollingOut"
            },
            msg(
                rolling_out,
                format!(
                    "Rolling out {} not up-to-date replicas",
                    count - i64::try_from(up_to_date).unwrap_or(0)
                ),
            ),
        ),
        Cond::new(
            "ScalingUp",
            scaling_up,
            if scaling_up {
                "ScalingUp"
            } else {
                "NotScalingUp"
            },
            msg(
                scaling_up,
                format!("Scaling up from {count} to {desired} replicas"),
            ),
        ),
        Cond::new(
            "ScalingDown",
            scaling_down,
            if scaling_down {
                "ScalingDown"
            } else {
                "NotScalingDown"
            },
            msg(
                scaling_down,
                format!("Scaling down from {count} to {desired} replicas"),
            ),
        ),
        Cond::new("Remediating", false, "NotRemediating", ""),
        Cond::new("Deleting", false, "NotDeleting", ""),
        Cond::new("Paused", false, "NotPaused", ""),
    ];
    set_conditions(
        &mut status,
        old_status,
        &md["metadata"]["generation"],
        &conds,
    );
    if rolling_out {
        // Readiness of new Machines does not always touch the MachineDeployment's objects.
        ctx.requeue_after(Duration::from_secs(5));
    }
    write_status(ctx.api, md, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_is_stable_and_safe() {
        let a = template_hash(&json!({"version": "v1.32.4", "x": 1}), "");
        let b = template_hash(&json!({"x": 1, "version": "v1.32.4"}), "");
        assert_eq!(a, b);
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(a, template_hash(&json!({"version": "v1.33.0", "x": 1}), ""));
        assert_ne!(
            a,
            template_hash(&json!({"version": "v1.32.4", "x": 1}), "salt")
        );
    }

    #[test]
    fn int_or_percent_rounds_like_upstream() {
        assert_eq!(int_or_percent(&json!("25%"), 5, 0, true), 2);
        assert_eq!(int_or_percent(&json!("25%"), 5, 0, false), 1);
        assert_eq!(int_or_percent(&json!(3), 5, 0, false), 3);
        assert_eq!(int_or_percent(&Value::Null, 5, 1, true), 1);
    }

    #[test]
    fn fnv32a_matches_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
    }
}
