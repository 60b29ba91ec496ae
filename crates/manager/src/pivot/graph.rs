//! The object graph of one cluster, as `clusterctl move` builds it: every namespaced object of
//! the Cluster API kinds (listed from the source's CRDs, not from a fixed table) that carries
//! the `cluster.x-k8s.io/cluster-name` label of the cluster, or is the Cluster, or is owned
//! (transitively) by one of those; the cluster's Secrets (`-ca`, `-etcd`, `-sa`, `-proxy`,
//! `-kubeconfig`, bootstrap data) and ConfigMaps found the same way; and the credentials
//! Secret named by the VSphereCluster's `identityRef`, which other clusters may share.
//!
//! Order: owners before the objects they own (topological over ownerReferences). Objects no
//! graph object owns come right after the Cluster ("soft ownership", as clusterctl does), so
//! that in the target the Cluster, which pauses them all, always exists first. Cycles are
//! broken deterministically; the references left out are added once every object exists.

use std::collections::{BTreeMap, BTreeSet};

use fledge_core::names;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use serde_json::Value;

use super::journal::Entry;
use super::{PivotError, Side};

/// The suffix of every Cluster API group (core, bootstrap, control plane, providers).
const CAPI_GROUP_SUFFIX: &str = "cluster.x-k8s.io";
/// clusterctl's own group (the inventory): never moved with a cluster.
const CLUSTERCTL_GROUP: &str = "clusterctl.cluster.x-k8s.io";
/// The suffixes of the Secrets Cluster API writes for a cluster.
const CLUSTER_SECRET_SUFFIXES: &[&str] = &["-ca", "-etcd", "-sa", "-proxy", "-kubeconfig"];

/// A kind that may hold objects of a cluster.
#[derive(Clone, Debug)]
pub struct Kind {
    /// Its API resource (plural from the CRD).
    pub resource: ApiResource,
    /// Whether it has a status subresource.
    pub status: bool,
}

/// An object found in the source.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its kind.
    pub kind: Kind,
    /// The object (with apiVersion and kind set).
    pub object: Value,
}

impl Node {
    fn uid(&self) -> &str {
        self.object["metadata"]["uid"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn owner_uids(&self) -> Vec<String> {
        self.object["metadata"]["ownerReferences"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r["uid"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn core_kind(kind: &str, plural: &str) -> Kind {
    let mut resource = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind));
    resource.plural = plural.to_string();
    Kind {
        resource,
        status: false,
    }
}

/// The namespaced Cluster API kinds the source serves, from its CRDs (storage version).
///
/// # Errors
/// Listing the CRDs failed.
pub async fn capi_kinds(source: &Client) -> Result<Vec<Kind>, PivotError> {
    let crd_resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
    ));
    let api: Api<DynamicObject> = Api::all_with(source.clone(), &crd_resource);
    let crds = api
        .list(&ListParams::default())
        .await
        .map_err(PivotError::kube(
            Side::Source,
            "listing",
            "CustomResourceDefinitions",
        ))?;
    let mut kinds = Vec::new();
    for crd in crds.items {
        let spec = &crd.data["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        if !group.ends_with(CAPI_GROUP_SUFFIX)
            || group == CLUSTERCTL_GROUP
            || spec["scope"] != "Namespaced"
        {
            continue;
        }
        let Some(version) = spec["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        else {
            continue;
        };
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        let mut resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            group,
            version["name"].as_str().unwrap_or_default(),
            kind,
        ));
        resource.plural = spec["names"]["plural"]
            .as_str()
            .unwrap_or(&resource.plural)
            .to_string();
        kinds.push(Kind {
            resource,
            status: !version["subresources"]["status"].is_null(),
        });
    }
    kinds.sort_by(|a, b| {
        a.resource
            .api_version
            .cmp(&b.resource.api_version)
            .then(a.resource.kind.cmp(&b.resource.kind))
    });
    Ok(kinds)
}

/// Lists every object of `kind` in `namespace` of the source.
async fn list(source: &Client, namespace: &str, kind: &Kind) -> Result<Vec<Node>, PivotError> {
    let api: Api<DynamicObject> = Api::namespaced_with(source.clone(), namespace, &kind.resource);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        // A CRD whose kind is not served yet: nothing of it to move.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Vec::new()),
        Err(e) => {
            return Err(PivotError::kube(
                Side::Source,
                "listing",
                format!("{} in {namespace}", kind.resource.plural),
            )(e));
        }
    };
    list.items
        .into_iter()
        .map(|item| {
            let mut object = serde_json::to_value(&item).map_err(|e| {
                PivotError::Internal(format!("serializing a {}: {e}", kind.resource.kind))
            })?;
            object["apiVersion"] = Value::from(kind.resource.api_version.clone());
            object["kind"] = Value::from(kind.resource.kind.clone());
            Ok(Node {
                kind: kind.clone(),
                object,
            })
        })
        .collect()
}

/// The graph of `namespace/cluster` in the source, owners first, as journal entries.
///
/// # Errors
/// A list failed, or the Cluster does not exist.
pub async fn discover(
    source: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<(Entry, Value)>, PivotError> {
    let mut candidates = Vec::new();
    for kind in capi_kinds(source).await? {
        candidates.extend(list(source, namespace, &kind).await?);
    }
    let secrets = list(source, namespace, &core_kind("Secret", "secrets")).await?;
    let config_maps = list(source, namespace, &core_kind("ConfigMap", "configmaps")).await?;
    let excluded: BTreeSet<String> = [
        super::journal::journal_name(cluster),
        format!("{cluster}-fledge-kubeconfig"),
    ]
    .into_iter()
    .collect();
    candidates.extend(
        secrets
            .into_iter()
            .chain(config_maps)
            .filter(|n| !excluded.contains(n.name())),
    );
    let nodes = select(candidates, cluster)?;
    Ok(order(nodes))
}

fn labelled(node: &Node, cluster: &str) -> bool {
    node.object["metadata"]["labels"][names::CLUSTER_NAME_LABEL].as_str() == Some(cluster)
}

/// Picks the cluster's objects among `candidates` (see the module doc); marks the shared
/// credentials Secret.
fn select(candidates: Vec<Node>, cluster: &str) -> Result<Vec<(Node, bool)>, PivotError> {
    let is_cluster =
        |n: &Node| n.kind.resource.kind == "Cluster" && n.kind.resource.group == "cluster.x-k8s.io";
    if !candidates
        .iter()
        .any(|n| is_cluster(n) && n.name() == cluster)
    {
        return Err(PivotError::Precondition(format!(
            "Cluster {cluster} not found in the source"
        )));
    }
    let secret_names: BTreeSet<String> = CLUSTER_SECRET_SUFFIXES
        .iter()
        .map(|s| format!("{cluster}{s}"))
        .collect();
    let mut chosen = vec![false; candidates.len()];
    for (i, n) in candidates.iter().enumerate() {
        let core = n.kind.resource.group.is_empty();
        chosen[i] = labelled(n, cluster)
            || (is_cluster(n) && n.name() == cluster)
            || (core && n.kind.resource.kind == "Secret" && secret_names.contains(n.name()));
    }
    // Owner closure, to a fixpoint.
    loop {
        let uids: BTreeSet<String> = candidates
            .iter()
            .zip(&chosen)
            .filter(|(_, c)| **c)
            .map(|(n, _)| n.uid().to_string())
            .collect();
        let mut changed = false;
        for (i, n) in candidates.iter().enumerate() {
            if !chosen[i] && n.owner_uids().iter().any(|u| uids.contains(u)) {
                chosen[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // The credentials Secret of each VSphereCluster of the graph: shared, so copied only.
    let identities: BTreeSet<String> = candidates
        .iter()
        .zip(&chosen)
        .filter(|(n, c)| **c && n.kind.resource.kind == "VSphereCluster")
        .filter(|(n, _)| n.object["spec"]["identityRef"]["kind"] == "Secret")
        .filter_map(|(n, _)| {
            n.object["spec"]["identityRef"]["name"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    Ok(candidates
        .into_iter()
        .zip(chosen)
        .filter_map(|(n, c)| {
            let shared = n.kind.resource.kind == "Secret"
                && n.kind.resource.group.is_empty()
                && identities.contains(n.name());
            (c || shared).then_some((n, shared))
        })
        .collect())
}

/// Orders `nodes` owners first (Kahn's algorithm; ties and cycles broken by kind and name).
pub fn order(nodes: Vec<(Node, bool)>) -> Vec<(Entry, Value)> {
    let by_uid: BTreeMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.uid().to_string(), i))
        .collect();
    let cluster = nodes
        .iter()
        .position(|(n, _)| n.kind.resource.kind == "Cluster");
    // deps[i]: the graph objects i must come after.
    let deps: Vec<BTreeSet<usize>> = nodes
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            let mut d: BTreeSet<usize> = n
                .owner_uids()
                .iter()
                .filter_map(|u| by_uid.get(u).copied())
                .filter(|&o| o != i)
                .collect();
            if d.is_empty()
                && let Some(c) = cluster
                && c != i
            {
                d.insert(c);
            }
            d
        })
        .collect();
    let key = |i: usize| {
        let n = &nodes[i].0;
        (
            // The Cluster first among equals, Secrets last.
            match n.kind.resource.kind.as_str() {
                "Cluster" => 0,
                "Secret" | "ConfigMap" => 2,
                _ => 1,
            },
            n.kind.resource.kind.clone(),
            n.name().to_string(),
        )
    };
    let mut placed = vec![false; nodes.len()];
    let mut out_order = Vec::with_capacity(nodes.len());
    while out_order.len() < nodes.len() {
        let ready: Option<usize> = (0..nodes.len())
            .filter(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]))
            .min_by_key(|&i| key(i));
        // A cycle: take the unplaced object with the fewest missing owners.
        let next = ready.or_else(|| {
            (0..nodes.len())
                .filter(|&i| !placed[i])
                .min_by_key(|&i| (deps[i].iter().filter(|&&d| !placed[d]).count(), key(i)))
        });
        let Some(next) = next else { break };
        placed[next] = true;
        out_order.push(next);
    }
    let mut slots: Vec<Option<(Node, bool)>> = nodes.into_iter().map(Some).collect();
    out_order
        .into_iter()
        .filter_map(|i| slots[i].take())
        .map(|(n, shared)| {
            let had_pause =
                !n.object["metadata"]["annotations"][names::PAUSED_ANNOTATION].is_null();
            let entry = Entry {
                api_version: n.kind.resource.api_version.clone(),
                kind: n.kind.resource.kind.clone(),
                plural: n.kind.resource.plural.clone(),
                name: n.name().to_string(),
                source_uid: n.uid().to_string(),
                target_uid: None,
                shared,
                had_pause,
                status: n.kind.status,
                refs_pending: false,
                pre_existing: false,
            };
            (entry, n.object)
        })
        .collect()
}

/// The API resource of an entry.
pub fn resource_of(entry: &Entry) -> ApiResource {
    let (group, version) = entry
        .api_version
        .split_once('/')
        .unwrap_or(("", entry.api_version.as_str()));
    let mut resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &entry.kind));
    resource.plural = entry.plural.clone();
    resource
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(
        kind: &str,
        group: &str,
        name: &str,
        uid: &str,
        owners: &[&str],
        cluster: Option<&str>,
    ) -> Node {
        let mut resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1beta2", kind));
        if group.is_empty() {
            resource = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind));
        }
        let mut labels = json!({});
        if let Some(c) = cluster {
            labels[names::CLUSTER_NAME_LABEL] = json!(c);
        }
        Node {
            kind: Kind {
                resource,
                status: !group.is_empty(),
            },
            object: json!({
                "metadata": {
                    "name": name, "uid": uid, "labels": labels,
                    "ownerReferences": owners.iter().map(|o| json!({"uid": o})).collect::<Vec<_>>(),
                },
            }),
        }
    }

    #[test]
    fn selects_by_label_name_and_ownership_and_orders_owners_first() {
        let capi = "cluster.x-k8s.io";
        let mut vc = node(
            "VSphereCluster",
            "infrastructure.cluster.x-k8s.io",
            "c1",
            "vc",
            &["cl"],
            Some("c1"),
        );
        vc.object["spec"] = json!({"identityRef": {"kind": "Secret", "name": "creds"}});
        let candidates = vec![
            node("Machine", capi, "m1", "m", &["kcp"], Some("c1")),
            node("Secret", "", "m1-data", "sd", &["kc"], None),
            node(
                "KubeadmConfig",
                "bootstrap.cluster.x-k8s.io",
                "m1",
                "kc",
                &["m"],
                Some("c1"),
            ),
            node(
                "KubeadmControlPlane",
                "controlplane.cluster.x-k8s.io",
                "c1-cp",
                "kcp",
                &["cl"],
                Some("c1"),
            ),
            node("Cluster", capi, "c1", "cl", &[], Some("c1")),
            vc,
            node(
                "VSphereMachineTemplate",
                "infrastructure.cluster.x-k8s.io",
                "t",
                "t",
                &[],
                Some("c1"),
            ),
            node("Secret", "", "c1-ca", "ca", &[], None),
            node("Secret", "", "creds", "cr", &[], None),
            // Another cluster's objects stay.
            node("Cluster", capi, "c2", "cl2", &[], Some("c2")),
            node("Secret", "", "c2-ca", "ca2", &["cl2"], None),
        ];
        let ordered = order(select(candidates, "c1").expect("select"));
        let ids: Vec<String> = ordered.iter().map(|(e, _)| e.id()).collect();
        assert_eq!(ids.len(), 9, "{ids:?}");
        let pos = |id: &str| {
            ids.iter()
                .position(|x| x == id)
                .unwrap_or_else(|| panic!("{id} in {ids:?}"))
        };
        assert_eq!(pos("Cluster/c1"), 0);
        assert!(pos("KubeadmControlPlane/c1-cp") < pos("Machine/m1"));
        assert!(pos("Machine/m1") < pos("KubeadmConfig/m1"));
        assert!(pos("KubeadmConfig/m1") < pos("Secret/m1-data"));
        assert!(!ids.contains(&"Cluster/c2".to_string()));
        let creds = ordered
            .iter()
            .find(|(e, _)| e.name == "creds")
            .expect("creds");
        assert!(creds.0.shared);
        assert!(ordered.iter().filter(|(e, _)| e.shared).count() == 1);
    }

    #[test]
    fn cycles_are_broken() {
        let capi = "cluster.x-k8s.io";
        let candidates = vec![
            node("Cluster", capi, "c1", "cl", &[], Some("c1")),
            node("Machine", capi, "a", "a", &["b"], Some("c1")),
            node("Machine", capi, "b", "b", &["a"], Some("c1")),
        ];
        let ordered = order(select(candidates, "c1").expect("select"));
        assert_eq!(ordered.len(), 3);
        assert_eq!(ordered[0].0.id(), "Cluster/c1");
    }

    #[test]
    fn a_missing_cluster_is_a_precondition_failure() {
        let err = select(vec![], "c1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not found"), "{err}");
    }
}
