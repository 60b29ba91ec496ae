//! Watches of the kinds the agent owns; every event asks the reconciler for a pass. Label
//! selectors keep the streams to the cluster's own objects, and no object is cached (the
//! reconciler reads what it needs), which keeps memory flat.

use std::sync::Arc;

use fledge_core::names;
use futures::StreamExt as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::apply::{self, CAPI, CONTROL_PLANE, HELM};
use crate::reconciler::Shared;

/// Starts one task per watched kind.
pub fn spawn(client: &Client, shared: &Arc<Shared>) {
    let ns = shared.identity.namespace.clone();
    let cluster_selector = format!("{}={}", names::CLUSTER_NAME_LABEL, shared.identity.name);
    let capi = [
        apply::resource(CAPI, "Cluster"),
        apply::resource(CAPI, "MachineDeployment"),
        apply::resource(CAPI, "MachineSet"),
        apply::resource(CAPI, "Machine"),
        apply::resource(CAPI, "MachineHealthCheck"),
        apply::resource(CONTROL_PLANE, "KubeadmControlPlane"),
    ];
    for resource in capi {
        let api = Api::namespaced_with(client.clone(), &ns, &resource);
        spawn_one(
            api,
            resource.kind.clone(),
            cluster_selector.clone(),
            false,
            shared.clone(),
        );
    }
    let apps = |kind: &str| ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind));
    let core = |kind: &str| ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind));
    // Every kind a manifest add-on may apply within the agent's permissions: a deleted or
    // edited add-on object triggers a pass at once instead of waiting for the resync.
    for resource in [
        apps("Deployment"),
        apps("DaemonSet"),
        apps("StatefulSet"),
        core("ConfigMap"),
        core("Service"),
        core("ServiceAccount"),
        core("Namespace"),
    ] {
        let api = Api::all_with(client.clone(), &resource);
        spawn_one(
            api,
            resource.kind.clone(),
            names::ADDON_LABEL.to_owned(),
            true,
            shared.clone(),
        );
    }
    let releases = apply::resource(HELM, "HelmRelease");
    let api = Api::namespaced_with(client.clone(), names::FLUX_NAMESPACE, &releases);
    spawn_one(
        api,
        "HelmRelease".into(),
        names::ADDON_LABEL.to_owned(),
        true,
        shared.clone(),
    );
}

fn spawn_one(
    api: Api<DynamicObject>,
    kind: String,
    selector: String,
    addon: bool,
    shared: Arc<Shared>,
) {
    tokio::spawn(async move {
        let config = watcher::Config::default().labels(&selector);
        let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(_)) | Ok(Event::InitDone) => shared.kick.notify_one(),
                Ok(Event::Delete(obj)) => {
                    if addon {
                        let what = format!(
                            "{kind} {}/{}",
                            obj.metadata.namespace.unwrap_or_default(),
                            obj.metadata.name.unwrap_or_default()
                        );
                        tracing::info!(object = %what, "add-on object deleted: re-applying");
                        shared.record_drift(what);
                    }
                    shared.kick.notify_one();
                }
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(err) => tracing::debug!(%kind, error = %err, "watch failed; retrying"),
            }
        }
    });
}
