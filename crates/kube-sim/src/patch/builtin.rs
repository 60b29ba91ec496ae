//! Built-in table of list semantics of the common Kubernetes types: the `patchStrategy` /
//! `patchMergeKey` tags (strategic merge patch) and `+listType` / `+listMapKey` /
//! `+structType` / `+mapType` markers (server-side apply) of the Go API types.

use super::{ListKeys, ListType};
use serde_json::Value;

/// Semantics of one field in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sem {
    /// Associative list keyed by these fields.
    Map(&'static [&'static str]),
    /// List of scalars with set semantics.
    Set,
    /// List replaced and owned whole.
    Atomic,
    /// Map or struct replaced and owned whole (`+structType=atomic`, `+mapType=atomic`).
    AtomicMap,
}

/// One table row: a path relative to the table's root, its apply semantics and, when they
/// differ, its strategic merge patch semantics.
#[derive(Debug, Clone, Copy)]
struct Row {
    path: &'static str,
    ssa: Sem,
    smp: Option<Sem>,
    /// Defaults of list map keys elements may omit.
    key_defaults: &'static [(&'static str, &'static str)],
}

const fn row(path: &'static str, ssa: Sem) -> Row {
    Row {
        path,
        ssa,
        smp: None,
        key_defaults: &[],
    }
}

const NAME: &[&str] = &["name"];
const TYPE: &[&str] = &["type"];
const IP: &[&str] = &["ip"];

/// `core/v1.Container` (and `EphemeralContainer`).
const CONTAINER: &[Row] = &[
    Row {
        path: "ports",
        ssa: Sem::Map(&["containerPort", "protocol"]),
        smp: None,
        key_defaults: &[("protocol", "TCP")],
    },
    row("env", Sem::Map(NAME)),
    row("env.valueFrom.configMapKeyRef", Sem::AtomicMap),
    row("env.valueFrom.secretKeyRef", Sem::AtomicMap),
    row("env.valueFrom.fieldRef", Sem::AtomicMap),
    row("env.valueFrom.resourceFieldRef", Sem::AtomicMap),
    row("envFrom", Sem::Atomic),
    row("volumeMounts", Sem::Map(&["mountPath"])),
    row("volumeDevices", Sem::Map(&["devicePath"])),
    row("resources.claims", Sem::Map(NAME)),
    row("resizePolicy", Sem::Atomic),
    row("command", Sem::Atomic),
    row("args", Sem::Atomic),
];

/// `core/v1.PodSpec`.
const POD_SPEC: &[Row] = &[
    row("volumes", Sem::Map(NAME)),
    row("initContainers", Sem::Map(NAME)),
    row("containers", Sem::Map(NAME)),
    row("ephemeralContainers", Sem::Map(NAME)),
    row("imagePullSecrets", Sem::Map(NAME)),
    row("hostAliases", Sem::Map(IP)),
    row("tolerations", Sem::Atomic),
    row("readinessGates", Sem::Atomic),
    row(
        "topologySpreadConstraints",
        Sem::Map(&["topologyKey", "whenUnsatisfiable"]),
    ),
    row("resourceClaims", Sem::Map(NAME)),
    row("schedulingGates", Sem::Map(NAME)),
    row("nodeSelector", Sem::AtomicMap),
    row(
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        Sem::AtomicMap,
    ),
];

/// `core/v1.PodStatus`.
const POD_STATUS: &[Row] = &[
    row("conditions", Sem::Map(TYPE)),
    row("podIPs", Sem::Map(IP)),
    Row {
        path: "hostIPs",
        ssa: Sem::Atomic,
        smp: Some(Sem::Map(IP)),
        key_defaults: &[],
    },
    row("resourceClaimStatuses", Sem::Map(NAME)),
    row("containerStatuses", Sem::Atomic),
    row("initContainerStatuses", Sem::Atomic),
    row("ephemeralContainerStatuses", Sem::Atomic),
];

/// Status of the workload controllers (`conditions` merged by `type`).
const CONDITIONS_BY_TYPE: &[Row] = &[row("conditions", Sem::Map(TYPE))];

/// `batch/v1.JobStatus`: merged by `type` for patches, atomic for apply.
const JOB_STATUS: &[Row] = &[Row {
    path: "conditions",
    ssa: Sem::Atomic,
    smp: Some(Sem::Map(TYPE)),
    key_defaults: &[],
}];

/// `core/v1.ServiceSpec` / `ServiceStatus`.
const SERVICE: &[Row] = &[
    Row {
        path: "spec.ports",
        ssa: Sem::Map(&["port", "protocol"]),
        smp: None,
        key_defaults: &[("protocol", "TCP")],
    },
    row("spec.selector", Sem::AtomicMap),
    row("spec.externalIPs", Sem::Atomic),
    row("spec.loadBalancerSourceRanges", Sem::Atomic),
    row("spec.clusterIPs", Sem::Atomic),
    row("spec.ipFamilies", Sem::Atomic),
    row("status.conditions", Sem::Map(TYPE)),
    row("status.loadBalancer.ingress", Sem::Atomic),
];

/// `core/v1.Node`.
const NODE: &[Row] = &[
    row("spec.podCIDRs", Sem::Set),
    row("spec.taints", Sem::Atomic),
    row("status.conditions", Sem::Map(TYPE)),
    Row {
        path: "status.addresses",
        ssa: Sem::Atomic,
        smp: Some(Sem::Map(TYPE)),
        key_defaults: &[],
    },
    row("status.images", Sem::Atomic),
    row("status.volumesInUse", Sem::Atomic),
    row("status.volumesAttached", Sem::Atomic),
];

/// The label selector of workload controllers (`+structType=atomic`).
const SELECTOR: &[Row] = &[row("spec.selector", Sem::AtomicMap)];

/// A flattened table entry with its full path from the object root.
#[derive(Debug, Clone)]
struct Entry {
    path: Vec<String>,
    row: Row,
}

/// List semantics of one built-in kind, from a table of the Kubernetes Go API type tags.
///
/// Paths not in the table are atomic lists / granular maps (apply) and replaced lists
/// (strategic merge patch). `metadata` semantics are added by the engines for every kind.
#[derive(Debug, Clone, Default)]
pub struct BuiltinListKeys {
    entries: Vec<Entry>,
}

impl BuiltinListKeys {
    fn add(&mut self, root: &str, rows: &[Row]) {
        for r in rows {
            let mut path: Vec<String> = root
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            path.extend(r.path.split('.').map(str::to_string));
            self.entries.push(Entry { path, row: *r });
        }
    }

    /// Adds a pod spec (with its containers) at `root` (e.g. `spec.template.spec`).
    fn add_pod_spec(&mut self, root: &str) {
        self.add(root, POD_SPEC);
        for c in ["containers", "initContainers", "ephemeralContainers"] {
            self.add(&format!("{root}.{c}"), CONTAINER);
        }
    }

    fn find(&self, path: &[&str]) -> Option<&Row> {
        self.entries
            .iter()
            .find(|e| e.path.len() == path.len() && e.path.iter().zip(path).all(|(a, b)| a == b))
            .map(|e| &e.row)
    }
}

fn to_list_type(s: Sem) -> Option<ListType> {
    match s {
        Sem::Map(keys) => Some(ListType::Map(
            keys.iter().map(|k| (*k).to_string()).collect(),
        )),
        Sem::Set => Some(ListType::Set),
        Sem::Atomic => Some(ListType::Atomic),
        Sem::AtomicMap => None,
    }
}

impl ListKeys for BuiltinListKeys {
    fn list_type(&self, path: &[&str]) -> Option<ListType> {
        self.find(path).and_then(|r| to_list_type(r.ssa))
    }

    fn strategic_list_type(&self, path: &[&str]) -> Option<ListType> {
        self.find(path)
            .and_then(|r| to_list_type(r.smp.unwrap_or(r.ssa)))
    }

    fn map_is_atomic(&self, path: &[&str]) -> bool {
        self.find(path).is_some_and(|r| r.ssa == Sem::AtomicMap)
    }

    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        let row = self.find(path)?;
        row.key_defaults
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| Value::String((*v).to_string()))
    }
}

/// The list semantics of the built-in kind `group`/`kind` (only `metadata` semantics, which
/// the engines add themselves, for kinds the table does not cover).
pub fn builtin_list_keys(group: &str, kind: &str) -> BuiltinListKeys {
    let mut t = BuiltinListKeys::default();
    match (group, kind) {
        ("", "Pod") => {
            t.add_pod_spec("spec");
            t.add("status", POD_STATUS);
        }
        ("", "PodTemplate") => t.add_pod_spec("template.spec"),
        ("", "ReplicationController") => {
            t.add_pod_spec("spec.template.spec");
            t.add("spec", &[row("selector", Sem::AtomicMap)]);
            t.add("status", CONDITIONS_BY_TYPE);
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            t.add_pod_spec("spec.template.spec");
            t.add("", SELECTOR);
            t.add("status", CONDITIONS_BY_TYPE);
            if kind == "StatefulSet" {
                t.add("spec", &[row("volumeClaimTemplates", Sem::Atomic)]);
            }
        }
        ("batch", "Job") => {
            t.add_pod_spec("spec.template.spec");
            t.add("", SELECTOR);
            t.add("status", JOB_STATUS);
        }
        ("batch", "CronJob") => {
            t.add_pod_spec("spec.jobTemplate.spec.template.spec");
            t.add("spec.jobTemplate", SELECTOR);
        }
        ("", "Service") => t.add("", SERVICE),
        ("", "Node") => t.add("", NODE),
        ("", "Namespace" | "PersistentVolumeClaim" | "PersistentVolume") => {
            t.add("status", CONDITIONS_BY_TYPE);
        }
        ("", "Endpoints") => t.add("", &[row("subsets", Sem::Atomic)]),
        _ => {}
    }
    t
}

/// API groups served by the Kubernetes API server itself (as opposed to custom resources).
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// Whether the API server accepts strategic merge patches for `group`/`kind`: built-in
/// types only; for custom resources the real server answers 415 UnsupportedMediaType.
///
/// The decision is by API group because that is what separates native types from custom
/// resources; `kind` is accepted for callers' convenience and future refinement.
pub fn strategic_supported(group: &str, kind: &str) -> bool {
    let _ = kind;
    BUILTIN_GROUPS.contains(&group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_patches_are_for_builtin_groups_only() {
        assert!(strategic_supported("", "Pod"));
        assert!(strategic_supported("apps", "Deployment"));
        assert!(strategic_supported("rbac.authorization.k8s.io", "Role"));
        assert!(!strategic_supported("cluster.x-k8s.io", "Cluster"));
        assert!(!strategic_supported("example.com", "Widget"));
    }

    #[test]
    fn table_paths_are_relative_to_the_object_root() {
        let d = builtin_list_keys("apps", "Deployment");
        let name = Some(ListType::Map(vec!["name".into()]));
        assert_eq!(
            d.list_type(&["spec", "template", "spec", "containers"]),
            name
        );
        assert_eq!(
            d.list_type(&["spec", "template", "spec", "containers", "env"]),
            name
        );
        assert_eq!(d.list_type(&["spec", "containers"]), None);
        assert!(d.map_is_atomic(&["spec", "selector"]));
        let p = builtin_list_keys("", "Pod");
        let ports = ["spec", "containers", "ports"];
        assert_eq!(
            p.list_type(&ports),
            Some(ListType::Map(vec![
                "containerPort".into(),
                "protocol".into()
            ]))
        );
        assert_eq!(
            p.map_key_default(&ports, "protocol"),
            Some(Value::String("TCP".into()))
        );
        let cj = builtin_list_keys("batch", "CronJob");
        assert_eq!(
            cj.list_type(&["spec", "jobTemplate", "spec", "template", "spec", "volumes"]),
            name
        );
        let n = builtin_list_keys("", "Node");
        assert_eq!(
            n.list_type(&["status", "addresses"]),
            Some(ListType::Atomic)
        );
        assert_eq!(
            n.strategic_list_type(&["status", "addresses"]),
            Some(ListType::Map(vec!["type".into()]))
        );
    }
}
