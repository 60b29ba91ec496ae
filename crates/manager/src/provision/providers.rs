//! `InstallingProviders`: the workload cluster gets the same Cluster API providers as the
//! management cluster (clusterctl move's precondition), copied from the management
//! cluster's clusterctl `Provider` inventory and the components clusterctl installed.
//!
//! For each provider of [`PINNED_PROVIDERS`] the inventory entry must exist with the pinned
//! version. Its components are then copied with server-side apply: the CRDs (selected by
//! clusterctl's `cluster.x-k8s.io/provider=<name>` label, or by the provider's API groups when
//! the CRDs carry no such label), its namespace, the ServiceAccounts, Roles, RoleBindings and
//! Deployments in that namespace, the ClusterRoles and ClusterRoleBindings with the label, and
//! the inventory entry itself. The phase is done when every provider Deployment is Available
//! in the workload cluster.
//!
//! # Caveats
//! - Webhook Services and cert-manager objects are not copied yet (the simulated providers
//!   have none); real CAPI providers need them, together with cert-manager in the target.
//! - Flux (for Helm add-ons) is installed by `flux.rs` once the providers are Available.

use fledge_core::names;
use fledge_core::spec::WorkloadCluster;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client, ResourceExt};

use super::{Context, Error, Progress, objects};

/// A provider the pipeline installs, pinned to one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedProvider {
    /// clusterctl's inventory name (`metadata.name` of the `Provider`, and the value of the
    /// `cluster.x-k8s.io/provider` label).
    pub name: &'static str,
    /// clusterctl's provider type.
    pub provider_type: &'static str,
    /// The version Fledge is built and tested against.
    pub version: &'static str,
    /// The API groups of its CRDs, used when the CRDs carry no provider label.
    pub groups: &'static [&'static str],
}

/// The providers and versions Fledge supports: Cluster API v1.14 (core, kubeadm bootstrap and
/// control plane) and CAPV v1.17, the releases whose CRDs `fledge-core` renders for. The one
/// place versions are pinned.
pub const PINNED_PROVIDERS: &[PinnedProvider] = &[
    PinnedProvider {
        name: "cluster-api",
        provider_type: "CoreProvider",
        version: "v1.14.0",
        groups: &[
            "cluster.x-k8s.io",
            "addons.cluster.x-k8s.io",
            "ipam.cluster.x-k8s.io",
            "runtime.cluster.x-k8s.io",
        ],
    },
    PinnedProvider {
        name: "bootstrap-kubeadm",
        provider_type: "BootstrapProvider",
        version: "v1.14.0",
        groups: &["bootstrap.cluster.x-k8s.io"],
    },
    PinnedProvider {
        name: "control-plane-kubeadm",
        provider_type: "ControlPlaneProvider",
        version: "v1.14.0",
        groups: &["controlplane.cluster.x-k8s.io"],
    },
    PinnedProvider {
        name: "infrastructure-vsphere",
        provider_type: "InfrastructureProvider",
        version: "v1.17.0",
        groups: &["infrastructure.cluster.x-k8s.io"],
    },
];

/// The CRD of clusterctl's inventory, copied first so the `Provider` objects can be written.
const INVENTORY_CRD: &str = "providers.clusterctl.cluster.x-k8s.io";
/// The taint kubeadm puts on control-plane nodes; right after bootstrap there are no others.
const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane";

fn gvk(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn inventory_resource() -> ApiResource {
    gvk("clusterctl.cluster.x-k8s.io", "v1alpha3", "Provider")
}

/// One inventory entry of the management cluster, checked against its pin.
struct Installed {
    pin: PinnedProvider,
    namespace: String,
    object: DynamicObject,
}

/// Checks the inventory against the pins, copies missing providers and waits for them.
///
/// # Errors
/// The inventory does not match [`PINNED_PROVIDERS`], or a read or an apply failed.
pub async fn run(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let installed = inventory(&ctx.client).await?;
    let Some(target) =
        objects::workload_client(&ctx.client, &namespace, &name, ctx.call_timeout).await?
    else {
        return Ok(Progress::waiting(
            "WaitingForKubeconfig",
            format!("Secret {namespace}/{name}-kubeconfig does not exist"),
        ));
    };
    let mut waiting = Vec::new();
    let mut copied_inventory_crd = false;
    for provider in &installed {
        match observe_in(&target, provider).await? {
            InTarget::Available => continue,
            // The inventory entry is applied last, so its presence means every component was
            // applied before: only the Deployments' availability is awaited.
            InTarget::Installed => {}
            InTarget::Missing => {
                if !copied_inventory_crd {
                    copy_crd_by_name(&ctx.client, &target, INVENTORY_CRD).await?;
                    copied_inventory_crd = true;
                }
                tracing::info!(
                    provider = provider.pin.name,
                    version = provider.pin.version,
                    "Installing provider into the workload cluster"
                );
                copy_provider(&ctx.client, &target, provider).await?;
                // An apply may have been all that was missing.
                if observe_in(&target, provider).await? == InTarget::Available {
                    continue;
                }
            }
        }
        waiting.push(provider.pin.name);
    }
    if waiting.is_empty() {
        return Ok(super::flux::ensure(ctx, cluster, &target)
            .await?
            .unwrap_or(Progress::Done));
    }
    Ok(Progress::waiting(
        "WaitingForProviders",
        format!(
            "provider Deployments not Available in the workload cluster yet: {}",
            waiting.join(", ")
        ),
    ))
}

/// What the workload cluster has of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InTarget {
    /// No inventory entry at the pinned version: the components must be copied.
    Missing,
    /// Copied, but a Deployment is not Available yet.
    Installed,
    /// Copied and every Deployment is Available.
    Available,
}

/// Reads the management cluster's inventory and checks it against the pins.
async fn inventory(client: &Client) -> Result<Vec<Installed>, Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &inventory_resource());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing", "clusterctl Providers"))?;
    let mut installed = Vec::new();
    for pin in PINNED_PROVIDERS {
        let Some(object) = list.items.iter().find(|p| p.name_any() == pin.name) else {
            return Err(Error::Inventory(format!(
                "provider {} is not installed in the management cluster (clusterctl init --infrastructure vsphere)",
                pin.name
            )));
        };
        let version = object.data["version"].as_str().unwrap_or_default();
        if version != pin.version {
            return Err(Error::Inventory(format!(
                "provider {} is {version} in the management cluster; Fledge needs {}",
                pin.name, pin.version
            )));
        }
        installed.push(Installed {
            pin: *pin,
            namespace: object.namespace().unwrap_or_default(),
            object: object.clone(),
        });
    }
    Ok(installed)
}

/// Observes one provider in the target: its inventory entry, then its Deployments.
async fn observe_in(target: &Client, provider: &Installed) -> Result<InTarget, Error> {
    let ns = &provider.namespace;
    let inventory: Api<DynamicObject> =
        Api::namespaced_with(target.clone(), ns, &inventory_resource());
    let entry = match inventory.get_opt(provider.pin.name).await {
        Ok(entry) => entry,
        // No inventory CRD yet: nothing is installed.
        Err(err) if crate::leader::is_status(&err, 404) => None,
        Err(err) => {
            return Err(Error::workload(
                "reading",
                format!("Provider {ns}/{}", provider.pin.name),
            )(err));
        }
    };
    if entry.is_none_or(|e| e.data["version"].as_str() != Some(provider.pin.version)) {
        return Ok(InTarget::Missing);
    }
    let deployments: Api<Deployment> = Api::namespaced(target.clone(), ns);
    let list = deployments
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            names::PROVIDER_LABEL,
            provider.pin.name
        )))
        .await
        .map_err(Error::workload("listing", format!("Deployments in {ns}")))?;
    if list.items.is_empty() {
        // Removed behind our back (or never copied): copy again.
        Ok(InTarget::Missing)
    } else if list.items.iter().all(is_available) {
        Ok(InTarget::Available)
    } else {
        Ok(InTarget::Installed)
    }
}

pub(super) fn is_available(deployment: &Deployment) -> bool {
    deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            })
        })
}

/// Lists `resource` in the management cluster (in `namespace`, or cluster-wide) as portable
/// JSON objects, optionally filtered by a label selector.
pub(super) async fn list_portable(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<serde_json::Value>, Error> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let list = api.list(&params).await.map_err(Error::kube(
        "listing",
        format!(
            "{} in {}",
            resource.plural,
            namespace.unwrap_or("the cluster")
        ),
    ))?;
    list.items
        .into_iter()
        .map(|item| {
            let mut value = serde_json::to_value(&item).map_err(|err| {
                Error::Internal(format!("serializing a {}: {err}", resource.kind))
            })?;
            // List items may come without their type; the apply needs it.
            value["apiVersion"] = serde_json::json!(resource.api_version);
            value["kind"] = serde_json::json!(resource.kind);
            Ok(objects::portable(value))
        })
        .collect()
}

pub(super) fn crd_resource() -> ApiResource {
    gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
}

async fn copy_crd_by_name(source: &Client, target: &Client, name: &str) -> Result<(), Error> {
    let crds = list_portable(source, &crd_resource(), None, None).await?;
    for crd in crds.iter().filter(|c| c["metadata"]["name"] == name) {
        objects::apply(target, crd, true).await?;
    }
    Ok(())
}

async fn copy_provider(
    source: &Client,
    target: &Client,
    provider: &Installed,
) -> Result<(), Error> {
    let selector = format!("{}={}", names::PROVIDER_LABEL, provider.pin.name);
    // CRDs: clusterctl labels them; fall back to the API groups when they are unlabelled.
    let mut crds = list_portable(source, &crd_resource(), None, Some(&selector)).await?;
    if crds.is_empty() {
        crds = list_portable(source, &crd_resource(), None, None)
            .await?
            .into_iter()
            .filter(|c| {
                c["spec"]["group"]
                    .as_str()
                    .is_some_and(|g| provider.pin.groups.contains(&g))
            })
            .collect();
    }
    for crd in &crds {
        objects::apply(target, crd, true).await?;
    }
    let ns = provider.namespace.as_str();
    let namespace = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": {names::PROVIDER_LABEL: provider.pin.name}},
    });
    objects::apply(target, &namespace, true).await?;
    for resource in [
        gvk("", "v1", "ServiceAccount"),
        gvk("rbac.authorization.k8s.io", "v1", "Role"),
        gvk("rbac.authorization.k8s.io", "v1", "RoleBinding"),
    ] {
        for obj in list_portable(source, &resource, Some(ns), None).await? {
            if resource.kind == "ServiceAccount" && obj["metadata"]["name"] == "default" {
                continue;
            }
            objects::apply(target, &obj, true).await?;
        }
    }
    for resource in [
        gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
        gvk("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
    ] {
        for obj in list_portable(source, &resource, None, Some(&selector)).await? {
            objects::apply(target, &obj, true).await?;
        }
    }
    for mut deployment in
        list_portable(source, &gvk("apps", "v1", "Deployment"), Some(ns), None).await?
    {
        tolerate_control_plane(&mut deployment);
        objects::apply(target, &deployment, true).await?;
    }
    let mut entry = serde_json::to_value(&provider.object).map_err(|err| {
        Error::Internal(format!("serializing Provider {}: {err}", provider.pin.name))
    })?;
    entry["apiVersion"] = serde_json::json!("clusterctl.cluster.x-k8s.io/v1alpha3");
    entry["kind"] = serde_json::json!("Provider");
    objects::apply(target, &objects::portable(entry), true).await?;
    Ok(())
}

/// Adds a toleration of the control-plane taint unless the Deployment has one: right after
/// bootstrap the workload cluster has only its first control-plane node (upstream provider
/// manifests carry the same toleration).
fn tolerate_control_plane(deployment: &mut serde_json::Value) {
    let spec = &mut deployment["spec"]["template"]["spec"];
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = serde_json::json!([]);
    }
    if let Some(tolerations) = spec["tolerations"].as_array_mut() {
        let present = tolerations.iter().any(|t| {
            t["key"] == CONTROL_PLANE_TAINT || (t["operator"] == "Exists" && t["key"].is_null())
        });
        if !present {
            tolerations.push(serde_json::json!({
                "key": CONTROL_PLANE_TAINT,
                "operator": "Exists",
                "effect": "NoSchedule",
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_get_one_control_plane_toleration() {
        for (name, mut deployment, want) in [
            (
                "none",
                serde_json::json!({"spec": {"template": {"spec": {}}}}),
                1,
            ),
            (
                "already",
                serde_json::json!({"spec": {"template": {"spec": {"tolerations": [
                    {"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"}]}}}}),
                1,
            ),
            (
                "other",
                serde_json::json!({"spec": {"template": {"spec": {"tolerations": [
                    {"key": "example.com/x", "effect": "NoSchedule"}]}}}}),
                2,
            ),
        ] {
            tolerate_control_plane(&mut deployment);
            let tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
                .as_array()
                .map(Vec::len);
            assert_eq!(tolerations, Some(want), "{name}");
        }
    }

    #[test]
    fn pins_cover_each_provider_type_once() {
        let mut types: Vec<_> = PINNED_PROVIDERS.iter().map(|p| p.provider_type).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), PINNED_PROVIDERS.len());
    }
}
