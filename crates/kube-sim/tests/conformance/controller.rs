//! A kube-runtime `Controller` reconciling a CRD defined here, owning ConfigMaps.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube::{Client, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::{TestServer, wait_for, within};

/// A test resource: the controller mirrors `spec.size` into an owned ConfigMap.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "conformance.kube-sim.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub size: i32,
}

/// The controller's report.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    pub observed_size: Option<i32>,
}

/// Installs a CRD and waits until it is Established.
pub async fn install_crd(client: &Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), crd).await.unwrap();
    let name = crd.name_any();
    within(
        &format!("CRD {name} to be Established"),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .unwrap();
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

async fn reconcile(w: Arc<Widget>, client: Arc<Client>) -> Result<Action, ReconcileError> {
    let ns = w.namespace().unwrap_or_default();
    let oref = w.controller_owner_ref(&()).unwrap();
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("{}-config", w.name_any()), "ownerReferences": [oref]},
        "data": {"size": w.spec.size.to_string()},
    });
    let cms: Api<ConfigMap> = Api::namespaced((*client).clone(), &ns);
    cms.patch(
        &format!("{}-config", w.name_any()),
        &PatchParams::apply("widget-controller").force(),
        &Patch::Apply(cm),
    )
    .await?;
    let widgets: Api<Widget> = Api::namespaced((*client).clone(), &ns);
    widgets
        .patch_status(
            &w.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observed_size": w.spec.size}})),
        )
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_w: Arc<Widget>, _e: &ReconcileError, _c: Arc<Client>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test]
async fn controller_creates_and_recreates_owned_configmap() {
    let s = TestServer::start().await;
    install_crd(&s.client, &Widget::crd()).await;
    let widgets: Api<Widget> = s.default_ns();
    let cms: Api<ConfigMap> = s.default_ns();

    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(cms.clone(), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(s.client.clone()))
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    widgets
        .create(
            &PostParams::default(),
            &Widget::new("w1", WidgetSpec { size: 3 }),
        )
        .await
        .unwrap();
    let cm = wait_for("the owned ConfigMap", async || {
        cms.get_opt("w1-config").await.unwrap()
    })
    .await;
    assert_eq!(cm.data.as_ref().unwrap()["size"], "3");
    let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Widget", "w1", Some(true))
    );
    wait_for("the widget status", async || {
        widgets
            .get_status("w1")
            .await
            .unwrap()
            .status
            .and_then(|st| st.observed_size)
            .filter(|&n| n == 3)
    })
    .await;

    // Deleting the child triggers a reconcile through `.owns`, which re-creates it.
    let old_uid = cm.metadata.uid.clone();
    cms.delete("w1-config", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the ConfigMap to be re-created", async || {
        cms.get_opt("w1-config")
            .await
            .unwrap()
            .filter(|c| c.metadata.uid != old_uid)
    })
    .await;

    // A spec change is reconciled.
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    wait_for("the ConfigMap to follow the spec", async || {
        cms.get_opt("w1-config")
            .await
            .unwrap()
            .filter(|c| c.data.as_ref().is_some_and(|d| d["size"] == "5"))
    })
    .await;

    // Deleting the owner garbage-collects the child.
    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the owned ConfigMap to be collected", async || {
        cms.get_opt("w1-config")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    task.abort();
    assert!(Widget::api_version(&()).starts_with("conformance.kube-sim.dev/"));
}

const CLEANUP: &str = "conformance.kube-sim.dev/cleanup";

/// A reconciler using kube-runtime's `finalizer` helper (JSON patches with `test` on the
/// finalizer list), recording Events with the kube-runtime `Recorder`.
async fn reconcile_with_finalizer(
    w: Arc<Widget>,
    client: Arc<Client>,
) -> Result<Action, FinalizerError> {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    use kube::runtime::finalizer::{Event as Fin, finalizer};
    let ns = w.namespace().unwrap_or_default();
    let widgets: Api<Widget> = Api::namespaced((*client).clone(), &ns);
    let recorder = Recorder::new(
        (*client).clone(),
        Reporter {
            controller: "widget-controller".into(),
            instance: None,
        },
    );
    let reference = w.object_ref(&());
    finalizer(&widgets, CLEANUP, w, |event| async move {
        let (reason, note) = match event {
            Fin::Apply(_) => ("Reconciled", "applied"),
            Fin::Cleanup(_) => ("CleanedUp", "cleaned up"),
        };
        let ev = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        recorder.publish(&ev, &reference).await?;
        Ok::<_, kube::Error>(Action::await_change())
    })
    .await
    .map_err(|e| FinalizerError(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct FinalizerError(String);

#[tokio::test]
async fn finalizer_helper_and_event_recorder() {
    use k8s_openapi::api::events::v1::Event as EventV1;
    let s = TestServer::start().await;
    install_crd(&s.client, &Widget::crd()).await;
    let widgets: Api<Widget> = s.default_ns();
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .run(
            reconcile_with_finalizer,
            |_, e: &FinalizerError, _| {
                eprintln!("reconcile error: {e}");
                Action::requeue(Duration::from_millis(200))
            },
            Arc::new(s.client.clone()),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    widgets
        .create(
            &PostParams::default(),
            &Widget::new("fw", WidgetSpec { size: 1 }),
        )
        .await
        .unwrap();
    let events: Api<EventV1> = s.default_ns();
    wait_for("the finalizer and the Reconciled event", async || {
        let w = widgets.get("fw").await.unwrap();
        let has_fin = w.finalizers().iter().any(|f| f == CLEANUP);
        let evs = events.list(&Default::default()).await.unwrap();
        let reconciled = evs.items.iter().any(|e| {
            e.reason.as_deref() == Some("Reconciled")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("fw")
        });
        (has_fin && reconciled).then_some(())
    })
    .await;

    widgets
        .delete("fw", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("cleanup to run and the widget to go", async || {
        widgets.get_opt("fw").await.unwrap().is_none().then_some(())
    })
    .await;
    let evs = events.list(&Default::default()).await.unwrap();
    assert!(
        evs.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("CleanedUp")),
        "cleanup event recorded: {evs:?}"
    );
    task.abort();
}
