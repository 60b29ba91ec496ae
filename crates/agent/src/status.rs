//! The cluster's observed state as the agent reports it: phase, message, control-plane and
//! per-pool counts and versions (from the KCP, MachineDeployments and Machines), add-on
//! states, conditions, the applied generation, and a digest of all of it.
//!
//! Ready counts Machines whose Node is ready (`status.nodeRef` set and `NodeReady=True`),
//! so the agent needs no access to Nodes.

use std::collections::BTreeMap;

use fledge_core::names;
use fledge_core::proto::v1::{AddonStatus, Condition, ReplicaCounts, StatusReport};
use fledge_core::render;
use fledge_core::spec::WorkloadClusterSpec;
use kube::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::addons::{AddonPhase, Addons};
use crate::apply::{self, CAPI, CONTROL_PLANE};

/// Ready, Progressing, Degraded.
pub const READY: &str = "Ready";
/// Working towards the spec.
pub const PROGRESSING: &str = "Progressing";
/// Something failed that needs a person.
pub const DEGRADED: &str = "Degraded";

/// Counts of the node groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The control plane.
    pub control_plane: ReplicaCounts,
    /// Pools by name.
    pub pools: BTreeMap<String, ReplicaCounts>,
    /// Whether the CAPI objects are here (after the pivot).
    pub present: bool,
    /// A node group still rolling out its newest spec (not observed yet, or machines not
    /// up to date), e.g. right after a certificate rotation was requested.
    pub rolling: Option<String>,
}

fn machine_ready(m: &Value) -> bool {
    m["metadata"]["deletionTimestamp"].is_null()
        && m["status"]["nodeRef"]["name"].is_string()
        && m["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "NodeReady"))
            .is_some_and(|c| c["status"] == "True")
}

fn counts<'a>(machines: impl Iterator<Item = &'a Value>, desired: i64) -> ReplicaCounts {
    let mut ready = 0;
    let mut version: Option<&str> = None;
    for m in machines {
        if machine_ready(m) {
            ready += 1;
        }
        if let Some(v) = m["spec"]["version"].as_str() {
            version = Some(version.map_or(v, |old| if compare(v, old).is_lt() { v } else { old }));
        }
    }
    ReplicaCounts {
        ready,
        desired: i32::try_from(desired).unwrap_or(i32::MAX),
        version: version.unwrap_or_default().to_owned(),
    }
}

/// Orders `vX.Y.Z` versions numerically (unparseable ones as strings).
fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| semver_parts(s.strip_prefix('v').unwrap_or(s));
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn semver_parts(s: &str) -> Option<(u64, u64, u64)> {
    let mut it = s.split(['.', '-', '+']);
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// Reads the node groups of cluster `namespace/name` with `spec`.
///
/// # Errors
/// The API's error.
pub async fn observe(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &WorkloadClusterSpec,
) -> Result<Observed, kube::Error> {
    let selector = format!("{}={name}", names::CLUSTER_NAME_LABEL);
    let to_values = |items: Vec<kube::api::DynamicObject>| -> Vec<Value> {
        items
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect()
    };
    let kcps = to_values(
        apply::list(
            client,
            &apply::resource(CONTROL_PLANE, "KubeadmControlPlane"),
            namespace,
            &selector,
        )
        .await?,
    );
    let present = kcps
        .iter()
        .any(|k| k["metadata"]["name"].as_str() == Some(render::control_plane_name(name).as_str()));
    let machines = to_values(
        apply::list(
            client,
            &apply::resource(CAPI, "Machine"),
            namespace,
            &selector,
        )
        .await?,
    );
    let mds = to_values(
        apply::list(
            client,
            &apply::resource(CAPI, "MachineDeployment"),
            namespace,
            &selector,
        )
        .await?,
    );
    let cp_machines = machines
        .iter()
        .filter(|m| m["metadata"]["labels"][names::CONTROL_PLANE_LABEL].is_string());
    let control_plane = counts(cp_machines, i64::from(spec.control_plane.replicas));
    let mut rolling = kcps
        .iter()
        .find(|k| !crate::capi::rolled_out(k))
        .map(|_| "the control plane is rolling out its spec".to_owned());
    let mut pools = BTreeMap::new();
    for pool in &spec.workers {
        let md_name = render::machine_deployment_name(name, &pool.name);
        let md = mds
            .iter()
            .find(|m| m["metadata"]["name"].as_str() == Some(md_name.as_str()));
        // An autoscaled pool's size is the autoscaler's (Cluster API starts it at the
        // minimum); the spec's replicas only count for fixed pools.
        let from_spec = match &pool.autoscaling {
            Some(a) => Some(i64::from(a.min_replicas)),
            None => pool.replicas.map(i64::from),
        };
        let desired = md
            .and_then(|m| m["spec"]["replicas"].as_i64())
            .or(from_spec)
            .unwrap_or(0);
        let group = machines.iter().filter(|m| {
            m["metadata"]["labels"][names::DEPLOYMENT_NAME_LABEL].as_str() == Some(md_name.as_str())
        });
        pools.insert(pool.name.clone(), counts(group, desired));
        if rolling.is_none() && md.is_some_and(|m| !crate::capi::rolled_out(m)) {
            rolling = Some(format!("pool {} is rolling out its spec", pool.name));
        }
    }
    Ok(Observed {
        control_plane,
        pools,
        present,
        rolling,
    })
}

/// Everything a report is made of.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The generation applied so far.
    pub applied_generation: i64,
    /// The cached spec's generation (0 without one).
    pub desired_generation: i64,
    /// The desired spec, if any.
    pub spec: Option<WorkloadClusterSpec>,
    /// The cluster is being deleted.
    pub deleting: bool,
    /// A problem that makes the cluster Degraded (bad cache, spec that does not render).
    pub fatal: Option<String>,
    /// Why the CAPI objects are not all applied (waiting or a failed pass).
    pub capi_pending: Option<String>,
    /// The node groups, if they could be read.
    pub observed: Option<Observed>,
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str) -> Condition {
    Condition {
        r#type: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: if ok {
            names::AS_EXPECTED_REASON
        } else {
            reason
        }
        .to_owned(),
        message: if ok { "" } else { message }.to_owned(),
        last_transition_time: None,
    }
}

/// Builds the report (its digest included; `observed_at` is left to the sender).
pub fn build(inputs: &Inputs, addons: &Addons) -> StatusReport {
    let addon_status: Vec<AddonStatus> = addons
        .runtimes
        .iter()
        .map(|(name, r)| AddonStatus {
            name: name.clone(),
            state: r.phase.as_str().to_owned(),
            message: r.message.clone(),
            applied_at: r.applied_at.as_deref().and_then(timestamp),
        })
        .collect();
    let observed = inputs.observed.clone().unwrap_or_default();
    let version = inputs
        .spec
        .as_ref()
        .map(|s| s.kubernetes_version.as_str())
        .unwrap_or_default();
    let cp = &observed.control_plane;
    let cp_ok = cp.desired > 0 && cp.ready == cp.desired && cp.version == version;
    let mut workers_msg = String::new();
    for (pool, c) in &observed.pools {
        let spec_replicas = inputs
            .spec
            .as_ref()
            .and_then(|s| s.workers.iter().find(|w| &w.name == pool))
            .and_then(|w| {
                if w.autoscaling.is_some() {
                    None
                } else {
                    w.replicas
                }
            });
        let want = spec_replicas.unwrap_or(c.desired);
        if c.ready != want || c.desired != want || (want > 0 && c.version != version) {
            workers_msg = format!(
                "pool {pool}: {}/{want} ready on {}",
                c.ready,
                if c.version.is_empty() {
                    "-"
                } else {
                    &c.version
                }
            );
            break;
        }
    }
    let workers_ok = workers_msg.is_empty();
    // The failure itself explains more than what it blocks.
    let bad_addon = addons
        .runtimes
        .iter()
        .find(|(_, r)| r.phase == AddonPhase::Failed)
        .or_else(|| {
            addons
                .runtimes
                .iter()
                .find(|(_, r)| r.phase == AddonPhase::Blocked)
        });
    let pending_addon = addons
        .runtimes
        .iter()
        .find(|(_, r)| r.phase != AddonPhase::Healthy);
    let addons_ok = pending_addon.is_none();
    let cp_msg = format!(
        "control plane: {}/{} ready on {}",
        cp.ready,
        cp.desired,
        if cp.version.is_empty() {
            "-"
        } else {
            &cp.version
        }
    );
    let (phase, message) = if let Some(fatal) = &inputs.fatal {
        (DEGRADED, fatal.clone())
    } else if inputs.spec.is_none() {
        (
            PROGRESSING,
            "waiting for the spec from the manager".to_owned(),
        )
    } else if let Some((name, r)) = bad_addon {
        (
            DEGRADED,
            format!("add-on {name} {}: {}", r.phase.as_str(), r.message),
        )
    } else if inputs.deleting {
        (
            PROGRESSING,
            "the cluster is being deleted; Cluster API objects are left alone".to_owned(),
        )
    } else if let Some(pending) = &inputs.capi_pending {
        (PROGRESSING, pending.clone())
    } else if inputs.applied_generation < inputs.desired_generation {
        (
            PROGRESSING,
            format!("applying generation {}", inputs.desired_generation),
        )
    } else if !cp_ok {
        (PROGRESSING, cp_msg.clone())
    } else if !workers_ok {
        (PROGRESSING, workers_msg.clone())
    } else if let Some(rolling) = &observed.rolling {
        (PROGRESSING, rolling.clone())
    } else if let Some((name, r)) = pending_addon {
        (
            PROGRESSING,
            format!("add-on {name} {}: {}", r.phase.as_str(), r.message),
        )
    } else {
        (
            READY,
            "every node group and add-on is as specified".to_owned(),
        )
    };
    let conditions = vec![
        condition(
            names::CONTROL_PLANE_READY_CONDITION,
            cp_ok,
            names::SCALING_REASON,
            &cp_msg,
        ),
        condition(
            names::WORKERS_READY_CONDITION,
            workers_ok,
            names::SCALING_REASON,
            &workers_msg,
        ),
        condition(
            names::ADDONS_READY_CONDITION,
            addons_ok,
            if bad_addon.is_some() {
                "AddonFailed"
            } else {
                "Installing"
            },
            &pending_addon
                .map(|(n, r)| format!("{n}: {} {}", r.phase.as_str(), r.message))
                .unwrap_or_default(),
        ),
    ];
    let mut report = StatusReport {
        phase: phase.to_owned(),
        message,
        applied_generation: inputs.applied_generation,
        control_plane: Some(observed.control_plane.clone()),
        pools: observed.pools.clone().into_iter().collect(),
        addons: addon_status,
        conditions,
        digest: String::new(),
        observed_at: None,
    };
    report.digest = digest(&report);
    report
}

fn timestamp(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn counts_json(c: &ReplicaCounts) -> Value {
    json!([c.ready, c.desired, c.version])
}

/// A digest of everything in `report` but `digest` and `observed_at`, independent of the
/// order of the `pools` map.
pub fn digest(report: &StatusReport) -> String {
    let pools: BTreeMap<&String, Value> = report
        .pools
        .iter()
        .map(|(k, v)| (k, counts_json(v)))
        .collect();
    let canonical = json!({
        "phase": report.phase,
        "message": report.message,
        "applied": report.applied_generation,
        "cp": report.control_plane.as_ref().map(counts_json),
        "pools": pools,
        "addons": report.addons.iter().map(|a| json!([a.name, a.state, a.message, a.applied_at.as_ref().map(|t| t.seconds)])).collect::<Vec<_>>(),
        "conditions": report.conditions.iter().map(|c| json!([c.r#type, c.status, c.reason, c.message])).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..12])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn counts(ready: i32, desired: i32, version: &str) -> ReplicaCounts {
        ReplicaCounts {
            ready,
            desired,
            version: version.into(),
        }
    }

    fn inputs() -> Inputs {
        let (spec, _) = testdata::edge1();
        Inputs {
            applied_generation: 5,
            desired_generation: 5,
            spec: Some(spec),
            observed: Some(Observed {
                control_plane: counts(3, 3, "v1.32.4"),
                pools: BTreeMap::from([
                    ("general".to_owned(), counts(3, 3, "v1.32.4")),
                    ("batch".to_owned(), counts(1, 1, "v1.32.4")),
                ]),
                present: true,
                rolling: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn everything_at_spec_is_ready_and_digests_are_stable() {
        let a = build(&inputs(), &Addons::default());
        assert_eq!(a.phase, READY, "{}", a.message);
        let b = build(&inputs(), &Addons::default());
        assert_eq!(a.digest, b.digest);
        // The map's iteration order does not matter.
        let mut reordered = a.clone();
        let mut entries: Vec<_> = a.pools.clone().into_iter().collect();
        entries.reverse();
        reordered.pools = std::collections::HashMap::new();
        for (k, v) in entries {
            reordered.pools.insert(k, v);
        }
        assert_eq!(digest(&reordered), a.digest);
        // observed_at does not count.
        reordered.observed_at = Some(prost_types::Timestamp {
            seconds: 9,
            nanos: 0,
        });
        assert_eq!(digest(&reordered), a.digest);
    }

    #[test]
    fn a_missing_worker_or_old_version_is_progressing_with_a_new_digest() {
        let ready = build(&inputs(), &Addons::default());
        let mut i = inputs();
        if let Some(o) = i.observed.as_mut() {
            o.pools.insert("general".into(), counts(2, 3, "v1.32.4"));
        }
        let r = build(&i, &Addons::default());
        assert_eq!(r.phase, PROGRESSING);
        assert!(r.message.contains("general"), "{}", r.message);
        assert_ne!(r.digest, ready.digest);
        let mut i = inputs();
        if let Some(o) = i.observed.as_mut() {
            o.control_plane = counts(3, 3, "v1.31.0");
        }
        assert_eq!(build(&i, &Addons::default()).phase, PROGRESSING);
    }

    #[test]
    fn a_fatal_problem_is_degraded() {
        let mut i = inputs();
        i.fatal = Some("cache Secret fledge-spec: key \"spec.json\": bad".into());
        let r = build(&i, &Addons::default());
        assert_eq!(r.phase, DEGRADED);
        assert!(r.message.contains("spec.json"));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(compare("v1.9.0", "v1.10.0").is_lt());
        assert!(compare("v1.32.4", "v1.32.4").is_eq());
    }
}
