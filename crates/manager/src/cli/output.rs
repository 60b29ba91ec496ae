//! How clusters and profiles are printed: `-o json` / `-o yaml` show them as the Kubernetes
//! objects they are stored as (`apiVersion`, `kind`, `metadata`, `spec` and `status` with the
//! camelCase field names of `fledge.dev/v1alpha1`, so the output of `cluster get -o yaml`
//! reads like the file it was created from); the default is a kubectl-like table.

use fledge_core::proto::v1;
use fledge_core::spec;
use serde_json::{Value, json};

/// Output format of `get`/`list`/`watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A table (the default).
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    /// JSON, the stored object's shape.
    Json,
    /// YAML, the stored object's shape.
    Yaml,
}

/// RFC 3339 (seconds, UTC) of a protobuf timestamp.
pub fn rfc3339(ts: &prost_types::Timestamp) -> Option<String> {
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    chrono::DateTime::from_timestamp(ts.seconds, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn counts(r: &v1::ReplicaCounts) -> spec::ReplicaCounts {
    spec::ReplicaCounts {
        ready: r.ready,
        desired: r.desired,
        version: non_empty(&r.version),
    }
}

/// The status of a cluster in the stored (spec crate) shape.
pub fn status(cluster: &v1::Cluster) -> spec::WorkloadClusterStatus {
    let Some(s) = &cluster.status else {
        return spec::WorkloadClusterStatus::default();
    };
    let workers = (!s.pools.is_empty()).then(|| spec::ReplicaCounts {
        ready: s.pools.values().map(|p| p.ready).sum(),
        desired: s.pools.values().map(|p| p.desired).sum(),
        version: None,
    });
    spec::WorkloadClusterStatus {
        phase: non_empty(&s.phase),
        message: non_empty(&s.message),
        observed_generation: (s.observed_generation != 0).then_some(s.observed_generation),
        control_plane: s.control_plane.as_ref().map(counts),
        workers,
        conditions: s
            .conditions
            .iter()
            .map(|c| spec::Condition {
                type_: c.r#type.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.as_ref().and_then(rfc3339),
                observed_generation: None,
            })
            .collect(),
        progress_percent: Some(s.progress_percent),
        step: None,
        pools: s
            .pools
            .iter()
            .map(|(k, v)| (k.clone(), counts(v)))
            .collect(),
        addons: s
            .addons
            .iter()
            .map(|a| spec::AddonState {
                name: a.name.clone(),
                state: a.state.clone(),
                message: a.message.clone(),
                applied_at: a.applied_at.as_ref().and_then(rfc3339),
            })
            .collect(),
        agent: s.agent.as_ref().map(|a| spec::AgentConnection {
            connected: a.connected,
            last_seen: a.last_seen.as_ref().and_then(rfc3339),
            version: non_empty(&a.agent_version),
            applied_generation: (a.applied_generation != 0).then_some(a.applied_generation),
            ..Default::default()
        }),
    }
}

/// A cluster as the `WorkloadCluster` object it is stored as.
pub fn cluster_object(cluster: &v1::Cluster) -> Value {
    let spec = spec::WorkloadClusterSpec::from(cluster.spec.clone().unwrap_or_default());
    let mut metadata = json!({
        "name": cluster.name,
        "namespace": cluster.tenant,
        "uid": cluster.uid,
        "generation": cluster.generation,
        "resourceVersion": cluster.revision,
    });
    if let Some(created) = cluster.created_at.as_ref().and_then(rfc3339) {
        metadata["creationTimestamp"] = Value::String(created);
    }
    json!({
        "apiVersion": spec::API_VERSION,
        "kind": "WorkloadCluster",
        "metadata": metadata,
        "spec": serde_json::to_value(&spec).unwrap_or(Value::Null),
        "status": serde_json::to_value(status(cluster)).unwrap_or(Value::Null),
    })
}

/// A profile as the `ClusterProfile` object it is stored as.
pub fn profile_object(profile: &v1::Profile) -> Value {
    let spec = spec::ClusterProfileSpec::from(profile.spec.clone().unwrap_or_default());
    let mut metadata = json!({
        "name": profile.name,
        "namespace": profile.tenant,
        "generation": profile.generation,
    });
    if let Some(created) = profile.created_at.as_ref().and_then(rfc3339) {
        metadata["creationTimestamp"] = Value::String(created);
    }
    json!({
        "apiVersion": spec::API_VERSION,
        "kind": "ClusterProfile",
        "metadata": metadata,
        "spec": serde_json::to_value(&spec).unwrap_or(Value::Null),
    })
}

/// A `v1/List` of objects, like `kubectl get -o json` prints several.
pub fn list_object(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Prints one object (or list) as JSON or YAML.
pub fn print_object(value: &Value, format: Format) {
    match format {
        Format::Yaml => print!(
            "{}",
            fledge_core::render::to_yaml_stream(std::slice::from_ref(value))
        ),
        _ => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        ),
    }
}

/// Age like kubectl shows it: `45s`, `12m`, `5h`, `3d`.
pub fn age(created: Option<&prost_types::Timestamp>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(created) = created else {
        return "<unknown>".into();
    };
    let secs = (now.timestamp() - created.seconds).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// What a cluster is currently doing or waiting for: the reason of its first unmet condition
/// (the provisioning controller names its step there).
pub fn step(cluster: &v1::Cluster) -> String {
    cluster
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.status != "True" && !c.reason.is_empty())
        })
        .map_or_else(|| "-".to_owned(), |c| c.reason.clone())
}

/// Desired workers: what the agent reports per pool (for autoscaled pools that is the
/// autoscaler's choice), else what the spec asks for.
fn desired_workers(spec: &v1::ClusterSpec, status: &v1::ClusterStatus) -> i32 {
    spec.workers
        .iter()
        .map(|w| {
            status
                .pools
                .get(&w.name)
                .map(|p| p.desired)
                .or(w.replicas)
                .or_else(|| w.autoscaling.as_ref().map(|a| a.min_replicas))
                .unwrap_or(0)
        })
        .sum()
}

/// One table row of a cluster.
pub fn cluster_row(
    cluster: &v1::Cluster,
    wide: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let spec = cluster.spec.clone().unwrap_or_default();
    let status = cluster.status.clone().unwrap_or_default();
    let cp_desired = spec.control_plane.as_ref().map_or(0, |c| c.replicas);
    let cp_ready = status.control_plane.as_ref().map_or(0, |c| c.ready);
    let workers_ready: i32 = status.pools.values().map(|p| p.ready).sum();
    let mut row = vec![
        cluster.name.clone(),
        non_empty(&status.phase).unwrap_or_else(|| "Pending".into()),
        format!("{}%", status.progress_percent),
        spec.kubernetes_version.clone(),
        format!("{cp_ready}/{cp_desired}"),
        format!("{workers_ready}/{}", desired_workers(&spec, &status)),
        age(cluster.created_at.as_ref(), now),
    ];
    if wide {
        row.push(step(cluster));
        row.push(match &status.agent {
            Some(a) if a.connected => "Connected".into(),
            Some(_) => "Disconnected".into(),
            None => "-".into(),
        });
    }
    row
}

/// Header of the cluster table.
pub fn cluster_header(wide: bool) -> Vec<String> {
    let mut header: Vec<String> = [
        "NAME", "PHASE", "PROGRESS", "VERSION", "CP", "WORKERS", "AGE",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if wide {
        header.push("STEP".into());
        header.push("AGENT".into());
    }
    header
}

/// One table row of a profile.
pub fn profile_row(profile: &v1::Profile, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let addons: Vec<&str> = profile
        .spec
        .iter()
        .flat_map(|s| s.addons.iter().map(|a| a.name.as_str()))
        .collect();
    vec![
        profile.name.clone(),
        addons.len().to_string(),
        if addons.is_empty() {
            "-".into()
        } else {
            addons.join(",")
        },
        profile.generation.to_string(),
        age(profile.created_at.as_ref(), now),
    ]
}

/// Header of the profile table.
pub fn profile_header() -> Vec<String> {
    ["NAME", "ADDONS", "NAMES", "GENERATION", "AGE"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// Formats rows in columns separated by three spaces, like kubectl.
pub fn table(rows: &[Vec<String>]) -> String {
    table_with_min(rows, &[])
}

/// Minimum column widths of the cluster table, so that the lines `cluster watch` prints one
/// at a time line up: the longest phase is `WaitingForControlPlane`.
pub const CLUSTER_WIDTHS: &[usize] = &[12, 22, 8, 8, 5, 7, 4, 20, 12];

/// [`table`] with minimum column widths.
pub fn table_with_min(rows: &[Vec<String>], min: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
                .max(min.get(i).copied().unwrap_or(0))
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 3;
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["NAME".to_string(), "PHASE".to_string()],
            vec!["edge-1".to_string(), "Ready".to_string()],
        ];
        assert_eq!(table(&rows), "NAME     PHASE\nedge-1   Ready\n");
    }

    #[test]
    fn age_reads_like_kubectl() {
        let now = chrono::DateTime::from_timestamp(100_000, 0).unwrap();
        let at = |s: i64| prost_types::Timestamp {
            seconds: 100_000 - s,
            nanos: 0,
        };
        assert_eq!(age(Some(&at(5)), now), "5s");
        assert_eq!(age(Some(&at(600)), now), "10m");
        assert_eq!(age(Some(&at(3 * 3600)), now), "3h");
        assert_eq!(age(Some(&at(3 * 86_400)), now), "3d");
    }

    #[test]
    fn cluster_object_has_stable_kubernetes_shape() {
        let cluster = v1::Cluster {
            name: "edge-1".into(),
            tenant: "team-a".into(),
            uid: "u1".into(),
            generation: 2,
            spec: Some(v1::ClusterSpec {
                kubernetes_version: "v1.32.4".into(),
                ..Default::default()
            }),
            status: Some(v1::ClusterStatus {
                phase: "Ready".into(),
                progress_percent: 100,
                ..Default::default()
            }),
            created_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            revision: "42".into(),
        };
        let obj = cluster_object(&cluster);
        assert_eq!(obj["kind"], "WorkloadCluster");
        assert_eq!(obj["metadata"]["namespace"], "team-a");
        assert_eq!(obj["metadata"]["creationTimestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(obj["spec"]["kubernetesVersion"], "v1.32.4");
        assert_eq!(obj["status"]["phase"], "Ready");
        assert_eq!(obj["status"]["progressPercent"], 100);
    }
}
