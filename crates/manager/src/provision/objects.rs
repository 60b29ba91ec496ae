//! Server-side apply of untyped objects (rendered CAPI objects, copied provider components,
//! filled-in agent manifests) and the workload cluster's client.

use std::time::Duration;

use fledge_core::names;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};

use super::Error;

/// The API of `obj`'s kind, namespaced when `obj` has a namespace.
pub fn api_for(
    client: &Client,
    obj: &serde_json::Value,
) -> Result<(Api<DynamicObject>, String), Error> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() || name.is_empty() {
        return Err(Error::Internal(format!(
            "object without apiVersion, kind or name: {api_version}/{kind} {name}"
        )));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let api = match obj["metadata"]["namespace"].as_str() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let what = match obj["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    };
    Ok((api, what))
}

/// Applies `obj` with server-side apply as `fledge-manager`, forcing: these objects are ours
/// (rendered or copied by the manager), so a conflicting manager must not block convergence.
///
/// # Errors
/// The API refused the object; `workload` picks which error variant reports it.
pub async fn apply(client: &Client, obj: &serde_json::Value, workload: bool) -> Result<(), Error> {
    let (api, what) = api_for(client, obj)?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    tracing::debug!(object = %what, "Applying");
    let params = PatchParams::apply(names::MANAGER_FIELD_MANAGER).force();
    let result = api.patch(name, &params, &Patch::Apply(obj)).await;
    match result {
        Ok(_) => Ok(()),
        Err(source) if workload => Err(Error::Workload {
            verb: "applying",
            what,
            source,
        }),
        Err(source) => Err(Error::Kube {
            verb: "applying",
            what,
            source,
        }),
    }
}

/// Strips what the API server owns from a copied object (identity, versions, status,
/// managed fields, owners), so it can be applied to another cluster.
pub fn portable(mut obj: serde_json::Value) -> serde_json::Value {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        for key in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "ownerReferences",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "finalizers",
        ] {
            meta.remove(key);
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            annotations.remove("deployment.kubernetes.io/revision");
        }
    }
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
    }
    obj
}

/// A client of the workload cluster `namespace/name` built from its `<name>-kubeconfig`
/// Secret (key `value`), as Cluster API writes it; `None` while the Secret does not exist.
///
/// # Errors
/// Reading the Secret failed, or the kubeconfig in it is unusable.
pub async fn workload_client(
    management: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Option<Client>, Error> {
    client_from_secret(
        management,
        namespace,
        &format!("{name}-kubeconfig"),
        timeout,
    )
    .await
}

/// A client built from the kubeconfig in key `value` of Secret `namespace/secret_name`;
/// `None` while the Secret does not exist.
///
/// # Errors
/// Reading the Secret failed, or the kubeconfig in it is unusable.
pub async fn client_from_secret(
    management: &Client,
    namespace: &str,
    secret_name: &str,
    timeout: Duration,
) -> Result<Option<Client>, Error> {
    let name = secret_name;
    let secrets: Api<Secret> = Api::namespaced(management.clone(), namespace);
    let Some(secret) = secrets.get_opt(secret_name).await.map_err(Error::kube(
        "reading",
        format!("Secret {namespace}/{secret_name}"),
    ))?
    else {
        return Ok(None);
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get("value")) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes.0);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).map_err(|err| {
        Error::Internal(format!(
            "Secret {namespace}/{secret_name}: bad kubeconfig: {err}"
        ))
    })?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|err| {
            Error::Internal(format!(
                "Secret {namespace}/{secret_name}: bad kubeconfig: {err}"
            ))
        })?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    let client = Client::try_from(config)
        .map_err(|err| Error::Internal(format!("workload client for {namespace}/{name}: {err}")))?;
    Ok(Some(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_drops_server_owned_fields_and_keeps_the_rest() {
        let obj = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "capi-controller-manager",
                "namespace": "capi-system",
                "uid": "u", "resourceVersion": "7", "generation": 2,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "clusterctl"}],
                "ownerReferences": [{"uid": "o"}],
                "labels": {"cluster.x-k8s.io/provider": "cluster-api"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
            },
            "spec": {"replicas": 1},
            "status": {"availableReplicas": 1},
        });
        let want = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "capi-controller-manager",
                "namespace": "capi-system",
                "labels": {"cluster.x-k8s.io/provider": "cluster-api"},
                "annotations": {"keep": "me"},
            },
            "spec": {"replicas": 1},
        });
        assert_eq!(portable(obj), want);
    }
}
