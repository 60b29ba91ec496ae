//! Providers are workloads: what `clusterctl init --infrastructure vsphere` leaves in a cluster
//! (CRDs, provider namespaces, controller Deployments, clusterctl `Provider` inventory), and
//! which providers' controllers may run in a cluster, judged by its Deployments.
//!
//! The CRDs under `crates/sim/crds/` are trimmed copies of the upstream ones (CAPI v1.14,
//! CAPV v1.17, Flux v2): the storage version only and a schema that preserves unknown fields,
//! because the simulator does not re-validate upstream schemas; names, scope, subresources and
//! printer columns are upstream's, which `tests/world.rs` checks against the upstream files.

use std::collections::BTreeSet;

use kube_sim::ApiServer;
use kube_sim::api_server::ListOptions;
use serde_json::{Value, json};
use tracing::info;

/// The trimmed CRDs, by file name.
pub const CRDS: &[(&str, &str)] = &[
    (
        "bootstrap.cluster.x-k8s.io_kubeadmconfigs.yaml",
        include_str!("../crds/bootstrap.cluster.x-k8s.io_kubeadmconfigs.yaml"),
    ),
    (
        "bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml",
        include_str!("../crds/bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml"),
    ),
    (
        "cluster.x-k8s.io_clusters.yaml",
        include_str!("../crds/cluster.x-k8s.io_clusters.yaml"),
    ),
    (
        "cluster.x-k8s.io_machinedeployments.yaml",
        include_str!("../crds/cluster.x-k8s.io_machinedeployments.yaml"),
    ),
    (
        "cluster.x-k8s.io_machinehealthchecks.yaml",
        include_str!("../crds/cluster.x-k8s.io_machinehealthchecks.yaml"),
    ),
    (
        "cluster.x-k8s.io_machines.yaml",
        include_str!("../crds/cluster.x-k8s.io_machines.yaml"),
    ),
    (
        "cluster.x-k8s.io_machinesets.yaml",
        include_str!("../crds/cluster.x-k8s.io_machinesets.yaml"),
    ),
    (
        "clusterctl.cluster.x-k8s.io_providers.yaml",
        include_str!("../crds/clusterctl.cluster.x-k8s.io_providers.yaml"),
    ),
    (
        "controlplane.cluster.x-k8s.io_kubeadmcontrolplanes.yaml",
        include_str!("../crds/controlplane.cluster.x-k8s.io_kubeadmcontrolplanes.yaml"),
    ),
    (
        "helm.toolkit.fluxcd.io_helmreleases.yaml",
        include_str!("../crds/helm.toolkit.fluxcd.io_helmreleases.yaml"),
    ),
    (
        "infrastructure.cluster.x-k8s.io_vsphereclusteridentities.yaml",
        include_str!("../crds/infrastructure.cluster.x-k8s.io_vsphereclusteridentities.yaml"),
    ),
    (
        "infrastructure.cluster.x-k8s.io_vsphereclusters.yaml",
        include_str!("../crds/infrastructure.cluster.x-k8s.io_vsphereclusters.yaml"),
    ),
    (
        "infrastructure.cluster.x-k8s.io_vspheremachines.yaml",
        include_str!("../crds/infrastructure.cluster.x-k8s.io_vspheremachines.yaml"),
    ),
    (
        "infrastructure.cluster.x-k8s.io_vspheremachinetemplates.yaml",
        include_str!("../crds/infrastructure.cluster.x-k8s.io_vspheremachinetemplates.yaml"),
    ),
    (
        "infrastructure.cluster.x-k8s.io_vspherevms.yaml",
        include_str!("../crds/infrastructure.cluster.x-k8s.io_vspherevms.yaml"),
    ),
    (
        "source.toolkit.fluxcd.io_helmcharts.yaml",
        include_str!("../crds/source.toolkit.fluxcd.io_helmcharts.yaml"),
    ),
    (
        "source.toolkit.fluxcd.io_helmrepositories.yaml",
        include_str!("../crds/source.toolkit.fluxcd.io_helmrepositories.yaml"),
    ),
    (
        "source.toolkit.fluxcd.io_ocirepositories.yaml",
        include_str!("../crds/source.toolkit.fluxcd.io_ocirepositories.yaml"),
    ),
];

/// CAPI core version the world installs.
pub const CAPI_VERSION: &str = "v1.14.0";
/// CAPV version the world installs.
pub const CAPV_VERSION: &str = "v1.17.0";

/// A provider whose simulated controllers run while its Deployment is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Provider {
    /// Cluster API core (Cluster, Machine, MachineSet, MachineDeployment, MachineHealthCheck).
    Core,
    /// Kubeadm bootstrap (KubeadmConfig).
    KubeadmBootstrap,
    /// Kubeadm control plane (KubeadmControlPlane).
    KubeadmControlPlane,
    /// The vSphere infrastructure provider (VSphereCluster, VSphereMachine, VSphereVM).
    Vsphere,
    /// Flux's helm-controller (HelmRelease).
    FluxHelm,
}

/// The set of providers available in one cluster.
pub type ProviderSet = BTreeSet<Provider>;

/// Recognizes an upstream controller image (any registry, any tag).
pub fn provider_of_image(image: &str) -> Option<Provider> {
    // Strip a digest, then a tag (a colon after the last slash), then keep the repository path.
    let image = image.split('@').next().unwrap_or(image);
    let repo = match image.rfind(':') {
        Some(colon) if colon > image.rfind('/').unwrap_or(0) => &image[..colon],
        _ => image,
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    match last {
        "cluster-api-controller" => Some(Provider::Core),
        "kubeadm-bootstrap-controller" => Some(Provider::KubeadmBootstrap),
        "kubeadm-control-plane-controller" => Some(Provider::KubeadmControlPlane),
        "capv-manager" | "cluster-api-vsphere-controller" => Some(Provider::Vsphere),
        "manager" if repo.contains("cluster-api-provider-vsphere") => Some(Provider::Vsphere),
        "helm-controller" => Some(Provider::FluxHelm),
        _ => None,
    }
}

/// Whether a Deployment is available (the `Available` condition, or available replicas).
pub fn deployment_available(deployment: &Value) -> bool {
    let status = &deployment["status"];
    let by_condition = status["conditions"].as_array().and_then(|cs| {
        cs.iter()
            .find(|c| c["type"] == "Available")
            .map(|c| c["status"] == "True")
    });
    by_condition.unwrap_or(false) && status["availableReplicas"].as_i64().unwrap_or(0) > 0
}

/// The providers whose Deployment exists and is available among `deployments`.
pub fn available_providers(deployments: &[Value]) -> ProviderSet {
    deployments
        .iter()
        .filter(|d| d["metadata"]["deletionTimestamp"].is_null() && deployment_available(d))
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["image"].as_str().and_then(provider_of_image))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The providers available in the cluster served by `api`.
pub fn observe(api: &ApiServer) -> ProviderSet {
    match api.list_objects("apps/v1", "Deployment", None, &ListOptions::default()) {
        Ok(list) => available_providers(list["items"].as_array().map_or(&[][..], Vec::as_slice)),
        Err(_) => ProviderSet::new(),
    }
}

/// Errors installing providers.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A bundled CRD does not parse.
    #[error("bundled CRD {file} does not parse: {message}")]
    Crd {
        /// The file.
        file: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The API refused an object.
    #[error("creating {what}: {source}")]
    Api {
        /// The object.
        what: String,
        /// The API error.
        #[source]
        source: Box<kube_sim::ApiError>,
    },
}

/// The bundled CRDs as JSON objects.
///
/// # Errors
/// [`InstallError::Crd`] if one does not parse (a bug in the bundle, caught by the tests).
pub fn crds() -> Result<Vec<Value>, InstallError> {
    CRDS.iter()
        .map(|(file, text)| {
            serde_saphyr::from_str::<Value>(text).map_err(|e| InstallError::Crd {
                file,
                message: e.to_string(),
            })
        })
        .collect()
}

/// One provider as clusterctl installs it.
struct ProviderInstall {
    namespace: &'static str,
    deployment: &'static str,
    image: String,
    inventory_name: &'static str,
    provider_type: &'static str,
    version: &'static str,
}

fn installs() -> Vec<ProviderInstall> {
    vec![
        ProviderInstall {
            namespace: "capi-system",
            deployment: "capi-controller-manager",
            image: format!("registry.k8s.io/cluster-api/cluster-api-controller:{CAPI_VERSION}"),
            inventory_name: "cluster-api",
            provider_type: "CoreProvider",
            version: CAPI_VERSION,
        },
        ProviderInstall {
            namespace: "capi-kubeadm-bootstrap-system",
            deployment: "capi-kubeadm-bootstrap-controller-manager",
            image: format!(
                "registry.k8s.io/cluster-api/kubeadm-bootstrap-controller:{CAPI_VERSION}"
            ),
            inventory_name: "bootstrap-kubeadm",
            provider_type: "BootstrapProvider",
            version: CAPI_VERSION,
        },
        ProviderInstall {
            namespace: "capi-kubeadm-control-plane-system",
            deployment: "capi-kubeadm-control-plane-controller-manager",
            image: format!(
                "registry.k8s.io/cluster-api/kubeadm-control-plane-controller:{CAPI_VERSION}"
            ),
            inventory_name: "control-plane-kubeadm",
            provider_type: "ControlPlaneProvider",
            version: CAPI_VERSION,
        },
        ProviderInstall {
            namespace: "capv-system",
            deployment: "capv-controller-manager",
            image: format!(
                "registry.k8s.io/capi-vsphere/cluster-api-vsphere-controller:{CAPV_VERSION}"
            ),
            inventory_name: "infrastructure-vsphere",
            provider_type: "InfrastructureProvider",
            version: CAPV_VERSION,
        },
    ]
}

/// The labels `clusterctl init` puts on every component of a provider (CRDs, namespace,
/// RBAC, Deployments, inventory entry); the manager selects a provider's components by them.
/// The bundled CAPI/CAPV CRD files carry the same labels.
fn clusterctl_labels(provider: &str) -> Value {
    json!({
        "clusterctl.cluster.x-k8s.io": "",
        "cluster.x-k8s.io/provider": provider,
    })
}

fn create_or_keep(api: &ApiServer, obj: Value) -> Result<Value, InstallError> {
    let what = format!(
        "{} {}",
        obj["kind"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    );
    match api.create_object(obj.clone()) {
        Ok(created) => Ok(created),
        Err(e) if e.is_conflict() || e.to_string().contains("already exists") => {
            let ns = obj["metadata"]["namespace"].as_str();
            api.get_object(
                obj["apiVersion"].as_str().unwrap_or_default(),
                obj["kind"].as_str().unwrap_or_default(),
                ns,
                obj["metadata"]["name"].as_str().unwrap_or_default(),
            )
            .map_err(|source| InstallError::Api {
                what,
                source: Box::new(source),
            })
        }
        Err(source) => Err(InstallError::Api {
            what,
            source: Box::new(source),
        }),
    }
}

/// Installs the CRDs (idempotent).
///
/// # Errors
/// If a CRD does not parse or the API refuses it.
pub fn install_crds(api: &ApiServer) -> Result<(), InstallError> {
    for crd in crds()? {
        create_or_keep(api, crd)?;
    }
    Ok(())
}

/// Installs what `clusterctl init --infrastructure vsphere` leaves in the management cluster,
/// with the provider Deployments already available (nothing runs Pods there; the world plays
/// the kubelet for its own management cluster).
///
/// # Errors
/// If the API refuses an object.
pub fn install_management_providers(api: &ApiServer) -> Result<(), InstallError> {
    install_crds(api)?;
    for p in installs() {
        create_or_keep(
            api,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": p.namespace,
                "labels": clusterctl_labels(p.inventory_name),
            }}),
        )?;
        let labels = json!({
            "cluster.x-k8s.io/provider": p.inventory_name,
            "control-plane": "controller-manager",
        });
        let deployment = create_or_keep(
            api,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": p.deployment, "namespace": p.namespace,
                             "labels": clusterctl_labels(p.inventory_name)},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{
                            "name": "manager",
                            "image": p.image,
                            "args": ["--leader-elect"],
                        }]},
                    },
                },
            }),
        )?;
        mark_available(api, deployment)?;
        create_or_keep(
            api,
            json!({
                "apiVersion": "clusterctl.cluster.x-k8s.io/v1alpha3",
                "kind": "Provider",
                "metadata": {
                    "name": p.inventory_name,
                    "namespace": p.namespace,
                    "labels": clusterctl_labels(p.inventory_name),
                },
                "providerName": p.inventory_name.split_once('-').map_or(p.inventory_name, |(_, n)| n),
                "type": p.provider_type,
                "version": p.version,
            }),
        )?;
        info!(
            provider = p.inventory_name,
            namespace = p.namespace,
            "Installed provider"
        );
    }
    Ok(())
}

/// Sets a Deployment's status as if all its replicas run.
///
/// # Errors
/// If the status cannot be written.
pub fn mark_available(api: &ApiServer, mut deployment: Value) -> Result<(), InstallError> {
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let now = kube_sim::api_server::now_rfc3339();
    deployment["status"] = json!({
        "observedGeneration": deployment["metadata"]["generation"].clone(),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.",
             "lastTransitionTime": now, "lastUpdateTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": "ReplicaSet has successfully progressed.",
             "lastTransitionTime": now, "lastUpdateTime": now},
        ],
    });
    let what = format!(
        "status of Deployment {}",
        deployment["metadata"]["name"].as_str().unwrap_or_default()
    );
    api.update_object_status(deployment)
        .map(|_| ())
        .map_err(|source| InstallError::Api {
            what,
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_upstream_images() {
        let cases = [
            (
                "registry.k8s.io/cluster-api/cluster-api-controller:v1.14.1",
                Some(Provider::Core),
            ),
            (
                "my.registry:5000/mirror/kubeadm-bootstrap-controller:v1.14.0",
                Some(Provider::KubeadmBootstrap),
            ),
            (
                "registry.k8s.io/cluster-api/kubeadm-control-plane-controller@sha256:ab",
                Some(Provider::KubeadmControlPlane),
            ),
            ("example.com/capv-manager:v1.17.0", Some(Provider::Vsphere)),
            (
                "gcr.io/cluster-api-provider-vsphere/release/manager:v1.5.0",
                Some(Provider::Vsphere),
            ),
            (
                "ghcr.io/fluxcd/helm-controller:v1.3.0",
                Some(Provider::FluxHelm),
            ),
            ("ghcr.io/fledge-dev/fledge-agent:0.1.0", None),
            ("nginx", None),
        ];
        for (image, want) in cases {
            assert_eq!(provider_of_image(image), want, "{image}");
        }
    }

    #[test]
    fn bundled_crds_parse() {
        let crds = crds().unwrap();
        assert_eq!(crds.len(), CRDS.len());
        assert!(crds.iter().all(|c| c["kind"] == "CustomResourceDefinition"));
    }

    /// Every CAPI/CAPV CRD carries the label of the provider that installs it, as clusterctl
    /// sets it, so selecting a provider's CRDs by label finds exactly its API groups.
    #[test]
    fn bundled_crds_carry_clusterctl_provider_labels() {
        let installed: Vec<&str> = installs().iter().map(|p| p.inventory_name).collect();
        let mut labelled = 0;
        for crd in crds().unwrap() {
            let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
            let group = crd["spec"]["group"].as_str().unwrap();
            let labels = &crd["metadata"]["labels"];
            let expected = match group {
                "cluster.x-k8s.io" => Some("cluster-api"),
                "bootstrap.cluster.x-k8s.io" => Some("bootstrap-kubeadm"),
                "controlplane.cluster.x-k8s.io" => Some("control-plane-kubeadm"),
                "infrastructure.cluster.x-k8s.io" => Some("infrastructure-vsphere"),
                _ => None,
            };
            match expected {
                Some(provider) => {
                    assert!(installed.contains(&provider), "{name}: {provider}");
                    assert_eq!(labels["cluster.x-k8s.io/provider"], provider, "{name}");
                    assert_eq!(labels["clusterctl.cluster.x-k8s.io"], "", "{name}");
                    labelled += 1;
                }
                // Flux is not installed by clusterctl; the inventory CRD is clusterctl's own.
                None => assert!(labels["cluster.x-k8s.io/provider"].is_null(), "{name}"),
            }
            if group == "clusterctl.cluster.x-k8s.io" {
                assert_eq!(labels["clusterctl.cluster.x-k8s.io/core"], "inventory");
            }
        }
        assert_eq!(labelled, 13);
    }
}
