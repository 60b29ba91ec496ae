//! The part of `WorkloadCluster.status` the stream owns, and the JSON merge patch that moves
//! the stored status to a new value of it.
//!
//! Owned: `agent`, `controlPlane`, `workers`, `pools`, `addons`. Never `phase` or
//! `conditions` (the provisioning controller's). The patch carries only what differs, and
//! nothing is written when nothing differs.

use std::collections::BTreeMap;

use fledge_core::proto::v1::StatusReport;
use fledge_core::spec::{AddonState, AgentConnection, ReplicaCounts, WorkloadClusterStatus};
use serde_json::Value;

/// The owned fields of `status`, everything else left at its default.
pub fn owned(status: Option<&WorkloadClusterStatus>) -> WorkloadClusterStatus {
    let Some(status) = status else {
        return WorkloadClusterStatus::default();
    };
    WorkloadClusterStatus {
        control_plane: status.control_plane.clone(),
        workers: status.workers.clone(),
        pools: status.pools.clone(),
        addons: status.addons.clone(),
        agent: status.agent.clone(),
        ..WorkloadClusterStatus::default()
    }
}

/// RFC 3339 of a protobuf timestamp.
pub fn rfc3339(ts: &prost_types::Timestamp) -> Option<String> {
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    chrono::DateTime::from_timestamp(ts.seconds, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Now, RFC 3339 (seconds).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn counts(c: &fledge_core::proto::v1::ReplicaCounts) -> ReplicaCounts {
    ReplicaCounts {
        ready: c.ready,
        desired: c.desired,
        version: (!c.version.is_empty()).then(|| c.version.clone()),
    }
}

/// Applies a report to the owned view `into`. `applied_generation` is the stream's newest
/// acknowledged generation (the report's own is folded in by the caller).
pub fn apply_report(into: &mut WorkloadClusterStatus, report: &StatusReport) {
    into.control_plane = report.control_plane.as_ref().map(counts);
    let pools: BTreeMap<String, ReplicaCounts> = report
        .pools
        .iter()
        .map(|(name, c)| (name.clone(), counts(c)))
        .collect();
    // The workers column is the sum over pools; its version only when every pool agrees.
    let mut versions = pools.values().map(|p| p.version.clone());
    let first = versions.next().flatten();
    let version = if versions.all(|v| v == first) {
        first
    } else {
        None
    };
    into.workers = Some(ReplicaCounts {
        ready: pools.values().map(|p| p.ready).sum(),
        desired: pools.values().map(|p| p.desired).sum(),
        version,
    });
    into.pools = pools;
    into.addons = report
        .addons
        .iter()
        .map(|a| AddonState {
            name: a.name.clone(),
            state: a.state.clone(),
            message: a.message.clone(),
            applied_at: a.applied_at.as_ref().and_then(rfc3339),
        })
        .collect();
    let agent = into.agent.get_or_insert_with(AgentConnection::default);
    agent.reported_phase = Some(report.phase.clone());
    agent.reported_message = Some(report.message.clone());
    agent.status_digest = (!report.digest.is_empty()).then(|| report.digest.clone());
}

/// The JSON merge patch (RFC 7386) turning `old` into `new`, or `None` when they are equal.
pub fn merge_patch(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(previous) => {
                        if let Some(diff) = merge_patch(previous, value) {
                            patch.insert(key.clone(), diff);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys() {
                if !new.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        // Arrays and scalars are replaced whole (merge patch has no finer unit). A `null`
        // inside `new` cannot occur: the status types skip absent fields.
        _ => Some(new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_core::proto::v1 as pb;
    use serde_json::json;

    #[test]
    fn merge_patch_carries_only_differences_and_removals() {
        let old = json!({"agent": {"connected": true, "version": "1"}, "pools": {"a": {"ready": 1}, "b": {"ready": 2}}, "addons": [1]});
        let new = json!({"agent": {"connected": false, "version": "1"}, "pools": {"a": {"ready": 1}}, "addons": [1, 2]});
        assert_eq!(
            merge_patch(&old, &new),
            Some(json!({"agent": {"connected": false}, "pools": {"b": null}, "addons": [1, 2]}))
        );
        assert_eq!(merge_patch(&new, &new), None);
    }

    #[test]
    fn report_fills_counts_sums_and_agent_fields_but_never_phase() {
        let mut status = WorkloadClusterStatus {
            phase: Some("HandedOver".into()),
            ..Default::default()
        };
        let report = StatusReport {
            phase: "Progressing".into(),
            message: "scaling".into(),
            control_plane: Some(pb::ReplicaCounts {
                ready: 1,
                desired: 3,
                version: "v1.31.4".into(),
            }),
            pools: [
                (
                    "a".to_string(),
                    pb::ReplicaCounts {
                        ready: 1,
                        desired: 2,
                        version: "v1.31.4".into(),
                    },
                ),
                (
                    "b".to_string(),
                    pb::ReplicaCounts {
                        ready: 0,
                        desired: 1,
                        version: String::new(),
                    },
                ),
            ]
            .into(),
            addons: vec![pb::AddonStatus {
                name: "cni".into(),
                state: "Healthy".into(),
                message: String::new(),
                applied_at: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
            }],
            digest: "d1".into(),
            ..Default::default()
        };
        apply_report(&mut status, &report);
        assert_eq!(status.phase.as_deref(), Some("HandedOver"));
        assert_eq!(
            status.workers,
            Some(ReplicaCounts {
                ready: 1,
                desired: 3,
                version: None
            })
        );
        assert_eq!(status.pools.len(), 2);
        assert_eq!(
            status.addons[0].applied_at.as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        let agent = status.agent.expect("agent");
        assert_eq!(agent.reported_phase.as_deref(), Some("Progressing"));
        assert_eq!(agent.status_digest.as_deref(), Some("d1"));
    }
}
