//! Add-ons of the profile, installed as a graph by `order` and `dependsOn`.
//!
//! # Rules
//! - An add-on starts once every add-on of a lower `order` has settled (Healthy, Failed or
//!   Blocked) and every add-on it depends on is healthy. A dependency that Failed or is
//!   Blocked blocks it; everything else proceeds ([`plan`]).
//! - Objects: inline manifests as written (namespaced kinds default to `default`), Helm as the
//!   Flux source + `HelmRelease` that `fledge_core::render::render_addon` renders; every
//!   object gets the label `fledge.dev/addon=<name>` and is server-side applied (field
//!   manager `fledge-agent`, forced) on every pass, which repairs drift.
//! - Inventory: ConfigMap `fledge-system/fledge-addon-<name>` (key `objects`, JSON list of
//!   references) lists what was applied; objects that leave the add-on are deleted, and so
//!   are the objects of add-ons that leave the profile. Nothing is pruned for an add-on
//!   that fails to render.
//! - Health gate: Deployments and DaemonSets available, HelmRelease `Ready=True`; a
//!   HelmRelease `Ready=False` with a `...Failed` reason fails at once, anything else fails
//!   after `timeoutSeconds` (300 by default). A Failed add-on is re-checked on every pass
//!   and becomes Healthy when its gate passes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fledge_core::names;
use fledge_core::render::render_addon;
use fledge_core::spec::{Addon, WorkloadCluster};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use crate::apply::{Applier, ObjRef};

/// Label on inventory ConfigMaps.
pub const INVENTORY_LABEL: &str = "fledge.dev/addon-inventory";
/// Default health gate timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// State of an add-on, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddonPhase {
    /// Not started (waits for lower orders or dependencies).
    Pending,
    /// Applied; the health gate has not passed yet.
    Applying,
    /// Applied and healthy.
    Healthy,
    /// Failed (render, apply or health gate).
    Failed,
    /// A dependency failed or is blocked.
    Blocked,
}

impl AddonPhase {
    /// The reported name.
    pub fn as_str(self) -> &'static str {
        match self {
            AddonPhase::Pending => "Pending",
            AddonPhase::Applying => "Applying",
            AddonPhase::Healthy => "Healthy",
            AddonPhase::Failed => "Failed",
            AddonPhase::Blocked => "Blocked",
        }
    }

    fn settled(self) -> bool {
        matches!(
            self,
            AddonPhase::Healthy | AddonPhase::Failed | AddonPhase::Blocked
        )
    }
}

/// What a pass does with an add-on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply it and check its gate.
    Start,
    /// Not yet; why.
    Wait(String),
    /// A dependency failed; why.
    Block(String),
}

/// Decides every add-on's next step from the current states (missing = Pending).
/// `installed` holds the add-ons that were healthy once with their current content: they
/// keep being applied and keep satisfying their dependents even while briefly unhealthy.
pub fn plan(
    addons: &[Addon],
    states: &BTreeMap<String, AddonPhase>,
    installed: &BTreeSet<String>,
) -> BTreeMap<String, Decision> {
    let state = |n: &str| states.get(n).copied().unwrap_or(AddonPhase::Pending);
    let known: BTreeSet<&str> = addons.iter().map(|a| a.name.as_str()).collect();
    let mut sorted: Vec<&Addon> = addons.iter().collect();
    sorted.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    let mut out = BTreeMap::new();
    for addon in &sorted {
        let decision = decide(addon, &sorted, &known, &state, installed);
        out.insert(addon.name.clone(), decision);
    }
    out
}

fn decide(
    addon: &Addon,
    sorted: &[&Addon],
    known: &BTreeSet<&str>,
    state: &impl Fn(&str) -> AddonPhase,
    installed: &BTreeSet<String>,
) -> Decision {
    for dep in &addon.depends_on {
        if !known.contains(dep.as_str()) {
            return Decision::Block(format!("depends on {dep}, which is not in the profile"));
        }
        match state(dep) {
            AddonPhase::Failed => return Decision::Block(format!("dependency {dep} failed")),
            AddonPhase::Blocked => return Decision::Block(format!("dependency {dep} is blocked")),
            _ => {}
        }
    }
    if installed.contains(&addon.name) {
        return Decision::Start;
    }
    if let Some(lower) = sorted
        .iter()
        .find(|a| a.order < addon.order && !state(&a.name).settled())
    {
        return Decision::Wait(format!(
            "waiting for {} (order {})",
            lower.name, lower.order
        ));
    }
    if let Some(dep) = addon
        .depends_on
        .iter()
        .find(|d| state(d) != AddonPhase::Healthy && !installed.contains(*d))
    {
        return Decision::Wait(format!("waiting for {dep} to be healthy"));
    }
    Decision::Start
}

/// The runtime state of one add-on.
#[derive(Debug, Clone)]
pub struct AddonRuntime {
    /// Its phase.
    pub phase: AddonPhase,
    /// Why (for Applying, Failed, Blocked, Pending).
    pub message: String,
    /// When its current content was first applied (RFC 3339).
    pub applied_at: Option<String>,
    /// When its current content was first applied, for the gate's timeout.
    started: Option<Instant>,
    /// Hash of its rendered objects.
    hash: String,
    /// It was healthy once with this content.
    installed: bool,
}

impl AddonRuntime {
    fn new() -> Self {
        AddonRuntime {
            phase: AddonPhase::Pending,
            message: String::new(),
            applied_at: None,
            started: None,
            hash: String::new(),
            installed: false,
        }
    }
}

/// The add-on reconciler's memory between passes.
#[derive(Debug, Default)]
pub struct Addons {
    /// Per add-on, by name.
    pub runtimes: BTreeMap<String, AddonRuntime>,
}

fn inventory_name(addon: &str) -> String {
    format!("fledge-addon-{addon}")
}

fn hash(objects: &[Value]) -> String {
    let bytes = serde_json::to_vec(objects).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

impl Addons {
    /// One pass over the profile's add-ons (none when the cluster has no profile).
    pub async fn reconcile(
        &mut self,
        applier: &Applier,
        cluster: &WorkloadCluster,
        addons: &[Addon],
    ) {
        let wanted: BTreeSet<String> = addons.iter().map(|a| a.name.clone()).collect();
        self.runtimes.retain(|name, _| wanted.contains(name));
        let mut sorted: Vec<&Addon> = addons.iter().collect();
        sorted.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        for addon in sorted {
            // Decided against the states as they are now, so an add-on whose dependencies
            // became healthy earlier in this pass starts in this pass too.
            let states: BTreeMap<String, AddonPhase> = self
                .runtimes
                .iter()
                .map(|(n, r)| (n.clone(), r.phase))
                .collect();
            let installed: BTreeSet<String> = self
                .runtimes
                .iter()
                .filter(|(_, r)| r.installed && r.phase != AddonPhase::Failed)
                .map(|(n, _)| n.clone())
                .collect();
            let decision = plan(addons, &states, &installed)
                .remove(&addon.name)
                .unwrap_or(Decision::Start);
            let runtime = self
                .runtimes
                .entry(addon.name.clone())
                .or_insert_with(AddonRuntime::new);
            match decision {
                Decision::Wait(reason) => {
                    runtime.phase = AddonPhase::Pending;
                    runtime.message = reason;
                }
                Decision::Block(reason) => {
                    if runtime.phase != AddonPhase::Blocked {
                        tracing::warn!(addon = %addon.name, %reason, "add-on blocked");
                    }
                    runtime.phase = AddonPhase::Blocked;
                    runtime.message = reason;
                }
                Decision::Start => {
                    let span = tracing::info_span!("addon", addon = %addon.name);
                    reconcile_one(applier, cluster, addon, runtime)
                        .instrument(span)
                        .await;
                }
            }
        }
        if let Err(err) = prune_removed(applier, &wanted).await {
            tracing::warn!(error = %err, "pruning removed add-ons failed; retried on the next pass");
        }
    }
}

async fn reconcile_one(
    applier: &Applier,
    cluster: &WorkloadCluster,
    addon: &Addon,
    runtime: &mut AddonRuntime,
) {
    let fail = |runtime: &mut AddonRuntime, message: String| {
        if runtime.phase != AddonPhase::Failed || runtime.message != message {
            tracing::error!(addon = %addon.name, %message, "add-on failed");
        }
        runtime.phase = AddonPhase::Failed;
        runtime.message = message;
    };
    let mut objects = match render_addon(cluster, addon) {
        Ok(objects) => objects,
        Err(err) => return fail(runtime, format!("invalid add-on: {err}")),
    };
    let content = hash(&objects);
    if content != runtime.hash {
        runtime.hash = content;
        runtime.started = Some(Instant::now());
        runtime.applied_at =
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        runtime.installed = false;
        runtime.phase = AddonPhase::Applying;
        runtime.message = "applying".into();
        tracing::info!(addon = %addon.name, objects = objects.len(), "applying add-on");
    }
    let mut refs = Vec::new();
    for (index, obj) in objects.iter_mut().enumerate() {
        if !obj["metadata"].is_object() {
            return fail(runtime, format!("manifests[{index}]: metadata is missing"));
        }
        obj["metadata"]["labels"][names::ADDON_LABEL] = Value::String(addon.name.clone());
        match applier.normalize(obj).await {
            Ok(r) => refs.push(r),
            Err(err) if err.is_transient() => return retry(runtime, &err),
            Err(err) => return fail(runtime, format!("manifests[{index}]: {err}")),
        }
    }
    if refs.iter().any(|r| r.namespace == names::FLUX_NAMESPACE) {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": names::FLUX_NAMESPACE}});
        let r = ObjRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: String::new(),
            name: names::FLUX_NAMESPACE.into(),
        };
        if let Ok(None) = applier.get(&r).await
            && let Err(err) = applier.apply(&r, &ns).await
        {
            return if err.is_transient() {
                retry(runtime, &err)
            } else {
                fail(runtime, err.to_string())
            };
        }
    }
    for (r, obj) in refs.iter().zip(&objects) {
        if let Err(err) = applier.apply(r, obj).await {
            return if err.is_transient() {
                retry(runtime, &err)
            } else {
                fail(runtime, err.to_string())
            };
        }
    }
    if let Err(err) = update_inventory(applier, &addon.name, &refs).await {
        tracing::warn!(error = %err, "updating the add-on inventory failed; retried on the next pass");
    }
    let gate = addon.health.clone().unwrap_or_default();
    match check_health(
        applier,
        &refs,
        gate.deployments_available,
        gate.helm_release_ready,
    )
    .await
    {
        Health::Healthy => {
            if runtime.phase != AddonPhase::Healthy {
                let took = runtime
                    .started
                    .map(|s| s.elapsed().as_millis())
                    .unwrap_or_default();
                tracing::info!(addon = %addon.name, took_ms = took, "add-on healthy");
            }
            runtime.phase = AddonPhase::Healthy;
            runtime.message.clear();
            runtime.installed = true;
        }
        Health::Failed(message) => fail(runtime, message),
        Health::NotYet(message) => {
            let timeout = gate
                .timeout_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
            let overdue = runtime.started.is_some_and(|s| s.elapsed() > timeout);
            if overdue && !runtime.installed {
                fail(
                    runtime,
                    format!(
                        "health gate not passed within {}s: {message}",
                        timeout.as_secs()
                    ),
                );
            } else if runtime.phase != AddonPhase::Failed {
                runtime.phase = AddonPhase::Applying;
                runtime.message = message;
            }
        }
    }
}

/// The API could not be reached: keep the add-on's state, say why, retry on the next pass.
fn retry(runtime: &mut AddonRuntime, err: &crate::apply::ApplyError) {
    tracing::warn!(error = %err, "add-on not applied: the API is unreachable; retrying");
    runtime.message = format!("retrying: {err}");
}

/// Result of a health gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Passed.
    Healthy,
    /// Not yet; what is missing.
    NotYet(String),
    /// Failed for good (until the object changes).
    Failed(String),
}

/// The gate of one object (Deployment, DaemonSet, HelmRelease); other kinds pass.
pub fn object_health(kind: &str, obj: &Value, deployments: bool, helm: bool) -> Health {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let n = |k: &str| obj["status"][k].as_i64().unwrap_or(0);
    let observed = n("observedGeneration") >= obj["metadata"]["generation"].as_i64().unwrap_or(0);
    match kind {
        "Deployment" if deployments => {
            let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            if observed && n("availableReplicas") >= want && n("updatedReplicas") >= want {
                Health::Healthy
            } else {
                Health::NotYet(format!(
                    "Deployment {name}: {}/{want} available",
                    n("availableReplicas")
                ))
            }
        }
        "DaemonSet" if deployments => {
            let want = n("desiredNumberScheduled");
            if observed && n("numberAvailable") >= want && obj["status"].is_object() {
                Health::Healthy
            } else {
                Health::NotYet(format!(
                    "DaemonSet {name}: {}/{want} available",
                    n("numberAvailable")
                ))
            }
        }
        "HelmRelease" if helm => {
            let ready = obj["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
            match ready {
                Some(c) if c["status"] == "True" && observed => Health::Healthy,
                Some(c)
                    if c["status"] == "False"
                        && c["reason"].as_str().is_some_and(|r| r.ends_with("Failed")) =>
                {
                    Health::Failed(format!(
                        "HelmRelease {name}: {}: {}",
                        c["reason"].as_str().unwrap_or_default(),
                        c["message"].as_str().unwrap_or_default()
                    ))
                }
                Some(c) => Health::NotYet(format!(
                    "HelmRelease {name}: Ready={} {}",
                    c["status"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                )),
                None => Health::NotYet(format!("HelmRelease {name}: not reconciled yet")),
            }
        }
        _ => Health::Healthy,
    }
}

async fn check_health(applier: &Applier, refs: &[ObjRef], deployments: bool, helm: bool) -> Health {
    for r in refs {
        let relevant = matches!(r.kind.as_str(), "Deployment" | "DaemonSet" if deployments)
            || (r.kind == "HelmRelease" && helm);
        if !relevant {
            continue;
        }
        let obj = match applier.get(r).await {
            Ok(Some(obj)) => serde_json::to_value(obj).unwrap_or_default(),
            Ok(None) => return Health::NotYet(format!("{r} is missing")),
            Err(err) => return Health::NotYet(err.to_string()),
        };
        match object_health(&r.kind, &obj, deployments, helm) {
            Health::Healthy => {}
            other => return other,
        }
    }
    Health::Healthy
}

/// Errors of inventory handling.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The API failed.
    #[error("inventory: {0}")]
    Api(#[from] kube::Error),
    /// Applying or deleting an object failed.
    #[error("inventory: {0}")]
    Apply(#[from] crate::apply::ApplyError),
    /// JSON.
    #[error("inventory: {0}")]
    Json(#[from] serde_json::Error),
}

fn inventory_api(client: &Client) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), names::FLEDGE_NAMESPACE)
}

fn read_refs(cm: &ConfigMap) -> Option<Vec<ObjRef>> {
    let text = cm.data.as_ref()?.get("objects")?;
    serde_json::from_str(text).ok()
}

/// Deletes what the previous inventory lists and `refs` does not, then records `refs`.
async fn update_inventory(
    applier: &Applier,
    addon: &str,
    refs: &[ObjRef],
) -> Result<(), InventoryError> {
    let api = inventory_api(applier.client());
    let name = inventory_name(addon);
    let previous = api
        .get_opt(&name)
        .await?
        .and_then(|cm| read_refs(&cm))
        .unwrap_or_default();
    let current: BTreeSet<&ObjRef> = refs.iter().collect();
    for old in previous.iter().filter(|r| !current.contains(r)) {
        tracing::info!(object = %old, "pruning object removed from the add-on");
        applier.delete(old).await?;
    }
    if previous.as_slice() == refs {
        return Ok(());
    }
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": names::FLEDGE_NAMESPACE,
            "labels": {INVENTORY_LABEL: "true", names::ADDON_LABEL: addon},
        },
        "data": {"objects": serde_json::to_string(refs)?},
    });
    api.patch(
        &name,
        &PatchParams::apply(names::AGENT_FIELD_MANAGER).force(),
        &Patch::Apply(cm),
    )
    .await?;
    Ok(())
}

/// Deletes the objects and inventory of add-ons that are no longer in the profile.
async fn prune_removed(applier: &Applier, wanted: &BTreeSet<String>) -> Result<(), InventoryError> {
    let api = inventory_api(applier.client());
    let list = api
        .list(&ListParams::default().labels(&format!("{INVENTORY_LABEL}=true")))
        .await?;
    for cm in list {
        let Some(addon) = cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(names::ADDON_LABEL))
            .cloned()
        else {
            continue;
        };
        if wanted.contains(&addon) {
            continue;
        }
        tracing::info!(%addon, "add-on removed from the profile: deleting its objects");
        for r in read_refs(&cm).unwrap_or_default().iter().rev() {
            applier.delete(r).await?;
        }
        match api
            .delete(&inventory_name(&addon), &Default::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_core::spec::HealthGate;

    fn addon(name: &str, order: i32, deps: &[&str]) -> Addon {
        Addon {
            name: name.into(),
            order,
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            manifests: Some(vec![]),
            helm: None,
            health: Some(HealthGate::default()),
        }
    }

    fn states(s: &[(&str, AddonPhase)]) -> BTreeMap<String, AddonPhase> {
        s.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect()
    }

    #[test]
    fn lower_orders_first_then_dependents_once_healthy() {
        let addons = [
            addon("cni", 10, &[]),
            addon("monitoring", 20, &["cni"]),
            addon("dns", 10, &[]),
        ];
        let none = BTreeSet::new();
        let d = plan(&addons, &states(&[]), &none);
        assert_eq!(d["cni"], Decision::Start);
        assert_eq!(d["dns"], Decision::Start);
        assert!(matches!(d["monitoring"], Decision::Wait(_)));
        let d = plan(
            &addons,
            &states(&[("cni", AddonPhase::Applying), ("dns", AddonPhase::Healthy)]),
            &none,
        );
        assert!(matches!(&d["monitoring"], Decision::Wait(r) if r.contains("cni")));
        let d = plan(
            &addons,
            &states(&[("cni", AddonPhase::Healthy), ("dns", AddonPhase::Healthy)]),
            &none,
        );
        assert_eq!(d["monitoring"], Decision::Start);
    }

    #[test]
    fn a_failure_blocks_only_its_dependents() {
        let addons = [
            addon("cni", 10, &[]),
            addon("storage", 10, &[]),
            addon("monitoring", 20, &["cni"]),
            addon("dashboards", 30, &["monitoring"]),
            addon("backup", 30, &["storage"]),
        ];
        let s = states(&[
            ("cni", AddonPhase::Failed),
            ("storage", AddonPhase::Healthy),
            ("monitoring", AddonPhase::Blocked),
        ]);
        let d = plan(&addons, &s, &BTreeSet::new());
        assert!(matches!(&d["monitoring"], Decision::Block(r) if r.contains("cni failed")));
        assert!(matches!(&d["dashboards"], Decision::Block(r) if r.contains("monitoring")));
        assert_eq!(d["backup"], Decision::Start);
        assert_eq!(d["cni"], Decision::Start, "a failed add-on is re-checked");
    }

    #[test]
    fn an_unknown_dependency_blocks_and_installed_addons_keep_going() {
        let addons = [
            addon("a", 1, &["ghost"]),
            addon("b", 1, &[]),
            addon("c", 2, &["b"]),
        ];
        let d = plan(&addons, &states(&[]), &BTreeSet::new());
        assert!(matches!(&d["a"], Decision::Block(r) if r.contains("ghost")));
        // b was healthy once and is being re-applied after drift: c keeps going.
        let installed = BTreeSet::from(["b".to_owned(), "c".to_owned()]);
        let d = plan(
            &addons,
            &states(&[("b", AddonPhase::Applying), ("a", AddonPhase::Blocked)]),
            &installed,
        );
        assert_eq!(d["c"], Decision::Start);
    }

    #[test]
    fn health_of_deployments_daemonsets_and_releases() {
        let dep = json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "availableReplicas": 2, "updatedReplicas": 2}});
        assert_eq!(
            object_health("Deployment", &dep, true, false),
            Health::Healthy
        );
        let dep = json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "availableReplicas": 1, "updatedReplicas": 2}});
        assert!(matches!(
            object_health("Deployment", &dep, true, false),
            Health::NotYet(_)
        ));
        assert_eq!(
            object_health("Deployment", &dep, false, false),
            Health::Healthy
        );
        let ds = json!({"metadata": {"name": "ds", "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "numberAvailable": 3}});
        assert_eq!(
            object_health("DaemonSet", &ds, true, false),
            Health::Healthy
        );
        let hr = |status: &str, reason: &str| {
            json!({"metadata": {"name": "m", "generation": 1},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": "boom"}]}})
        };
        assert_eq!(
            object_health("HelmRelease", &hr("True", "InstallSucceeded"), false, true),
            Health::Healthy
        );
        assert!(
            matches!(object_health("HelmRelease", &hr("False", "InstallFailed"), false, true), Health::Failed(m) if m.contains("boom"))
        );
        assert!(matches!(
            object_health("HelmRelease", &hr("Unknown", "Progressing"), false, true),
            Health::NotYet(_)
        ));
    }
}
