//! The Cluster API objects of the cluster, kept at the `Phase::Full` render of the cached spec.
//!
//! # Rules
//! - Nothing is touched until the pivot has put the objects here and unpaused them: the
//!   `Cluster` must exist without `spec.paused` and without the paused annotation, and the
//!   `KubeadmControlPlane` must exist. The agent never creates a `Cluster` or a
//!   `VSphereCluster` (they move with the pivot and do not change on day 2).
//! - Server-side apply with field manager `fledge-agent`, forced: the moved objects were
//!   created by `fledge-manager`.
//! - MachineDeployments are created once the control plane has at least one ready replica:
//!   right after the pivot that is already true (CP-A), so workers start while the control
//!   plane scales from 1 to its target, which is safe because workers join through the
//!   API endpoint (kube-vip), not through a particular control-plane machine.
//! - Kubernetes upgrades: the control plane first (KCP version and template); a pool keeps
//!   its current machine template (version and references) until the KCP reports every
//!   replica up to date on the new version, then pools move one at a time, in spec order
//!   ([`plan_pools`]).
//! - Autoscaled pools render no `spec.replicas`, so the agent never owns that field.
//! - Templates are content-hashed; a template is deleted once no MachineDeployment,
//!   MachineSet or the KCP refers to it and it is not desired (control-plane templates only
//!   once the KCP is fully rolled out). A removed pool's MachineDeployment and health check
//!   are deleted.

use std::collections::{BTreeMap, BTreeSet};

use fledge_core::names;
use fledge_core::render::{self, Phase};
use fledge_core::spec::WorkloadCluster;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use crate::apply::{self, BOOTSTRAP, CAPI, CONTROL_PLANE, INFRA};

/// What a CAPI pass achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapiOutcome {
    /// Every object the spec allows by now is applied.
    Applied,
    /// Nothing could be applied yet; why.
    Waiting(String),
}

/// Why a CAPI pass failed.
#[derive(Debug, thiserror::Error)]
pub enum CapiError {
    /// The spec cannot be rendered.
    #[error("rendering the spec: {0}")]
    Render(#[from] render::RenderError),
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was done.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// A rendered object does not serialize (ruled out by the types).
    #[error("serializing: {0}")]
    Json(#[from] serde_json::Error),
}

/// The version plan of one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolPlan {
    /// Apply the rendered pool (target version and templates).
    Target,
    /// Keep the MachineDeployment's current version and template references.
    Hold,
    /// Do not create the pool yet (the control plane is being upgraded).
    Wait,
}

/// What [`plan_pools`] needs to know about an existing pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolState {
    /// The MachineDeployment's `spec.template.spec.version`; `None` if it does not exist.
    pub current: Option<String>,
    /// The MachineDeployment has rolled out its current spec (every machine up to date).
    pub rolled_out: bool,
}

/// Decides, per pool in spec order, whether it may move to `target` now.
///
/// While the control plane is not done with `target`, existing pools on another version
/// are held and new pools wait. Once it is done, pools move one at a time: a pool already
/// on `target` that has not rolled out yet keeps the others held.
pub fn plan_pools(target: &str, control_plane_done: bool, pools: &[PoolState]) -> Vec<PoolPlan> {
    let on_target = |p: &PoolState| p.current.as_deref() == Some(target);
    if !control_plane_done {
        return pools
            .iter()
            .map(|p| match &p.current {
                None => PoolPlan::Wait,
                Some(_) if on_target(p) => PoolPlan::Target,
                Some(_) => PoolPlan::Hold,
            })
            .collect();
    }
    let mut free = !pools.iter().any(|p| on_target(p) && !p.rolled_out);
    pools
        .iter()
        .map(|p| {
            if p.current.is_none() || on_target(p) {
                PoolPlan::Target
            } else if free {
                free = false;
                PoolPlan::Target
            } else {
                PoolPlan::Hold
            }
        })
        .collect()
}

fn i64_at(v: &Value, path: &[&str]) -> i64 {
    path.iter().fold(v, |v, k| &v[*k]).as_i64().unwrap_or(0)
}

/// The KCP runs `target` on every machine it has and has seen its newest spec.
pub fn control_plane_done(kcp: &Value, target: &str) -> bool {
    kcp["status"]["version"].as_str() == Some(target)
        && i64_at(kcp, &["status", "upToDateReplicas"]) == i64_at(kcp, &["status", "replicas"])
        && i64_at(kcp, &["status", "observedGeneration"])
            >= i64_at(kcp, &["metadata", "generation"])
}

/// The object rolled out its spec: observed, and every machine up to date and ready.
pub fn rolled_out(obj: &Value) -> bool {
    let replicas = obj["spec"]["replicas"]
        .as_i64()
        .unwrap_or_else(|| i64_at(obj, &["status", "replicas"]));
    i64_at(obj, &["status", "observedGeneration"]) >= i64_at(obj, &["metadata", "generation"])
        && i64_at(obj, &["status", "upToDateReplicas"]) == replicas
        && i64_at(obj, &["status", "replicas"]) == replicas
        && i64_at(obj, &["status", "readyReplicas"]) == replicas
}

fn paused(obj: &Value) -> bool {
    obj["spec"]["paused"].as_bool() == Some(true)
        || obj["metadata"]["annotations"][names::PAUSED_ANNOTATION].is_string()
}

struct Ctx<'a> {
    client: &'a Client,
    namespace: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    fn api(&self, gv: (&str, &str), kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            self.namespace,
            &apply::resource(gv, kind),
        )
    }

    async fn get(
        &self,
        gv: (&str, &str),
        kind: &str,
        name: &str,
    ) -> Result<Option<Value>, CapiError> {
        let obj = self
            .api(gv, kind)
            .get_opt(name)
            .await
            .map_err(|source| CapiError::Api {
                what: format!("reading {kind} {}/{name}", self.namespace),
                source,
            })?;
        obj.map(serde_json::to_value)
            .transpose()
            .map_err(Into::into)
    }

    async fn list(&self, gv: (&str, &str), kind: &str) -> Result<Vec<Value>, CapiError> {
        let selector = format!("{}={}", names::CLUSTER_NAME_LABEL, self.name);
        let items = apply::list(
            self.client,
            &apply::resource(gv, kind),
            self.namespace,
            &selector,
        )
        .await
        .map_err(|source| CapiError::Api {
            what: format!("listing {kind} in {}", self.namespace),
            source,
        })?;
        items
            .into_iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    async fn apply(&self, gv: (&str, &str), kind: &str, obj: &Value) -> Result<Value, CapiError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let applied = self
            .api(gv, kind)
            .patch(
                name,
                &PatchParams::apply(names::AGENT_FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(|source| CapiError::Api {
                what: format!("applying {kind} {}/{name}", self.namespace),
                source,
            })?;
        Ok(serde_json::to_value(applied)?)
    }

    async fn delete(&self, gv: (&str, &str), kind: &str, name: &str) -> Result<(), CapiError> {
        match self
            .api(gv, kind)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => {
                tracing::info!(kind, name, "deleted");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(CapiError::Api {
                what: format!("deleting {kind} {}/{name}", self.namespace),
                source,
            }),
        }
    }
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().fold(v, |v, k| &v[*k]).as_str()
}

const MD_VERSION: &[&str] = &["spec", "template", "spec", "version"];
const MD_CONFIG_REF: &[&str] = &["spec", "template", "spec", "bootstrap", "configRef", "name"];
const MD_INFRA_REF: &[&str] = &["spec", "template", "spec", "infrastructureRef", "name"];
const KCP_INFRA_REF: &[&str] = &[
    "spec",
    "machineTemplate",
    "spec",
    "infrastructureRef",
    "name",
];

/// One pass over the CAPI objects of `cluster` (which carries the cached spec and the
/// agent's name and namespace).
///
/// # Errors
/// See [`CapiError`]; a failed pass is retried by the caller.
pub async fn reconcile(
    client: &Client,
    cluster: &WorkloadCluster,
) -> Result<CapiOutcome, CapiError> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let ctx = Ctx {
        client,
        namespace,
        name,
    };
    let Some(capi_cluster) = ctx.get(CAPI, "Cluster", name).await? else {
        return Ok(CapiOutcome::Waiting(format!(
            "Cluster {namespace}/{name} is not in this cluster yet (pivot pending)"
        )));
    };
    if paused(&capi_cluster) {
        return Ok(CapiOutcome::Waiting(format!(
            "Cluster {namespace}/{name} is paused"
        )));
    }
    let rendered = render::render_objects(cluster, Phase::Full)?;
    let kcp_name = render::control_plane_name(name);
    let Some(kcp_before) = ctx
        .get(CONTROL_PLANE, "KubeadmControlPlane", &kcp_name)
        .await?
    else {
        return Ok(CapiOutcome::Waiting(format!(
            "KubeadmControlPlane {namespace}/{kcp_name} is not in this cluster yet"
        )));
    };
    if paused(&kcp_before) {
        return Ok(CapiOutcome::Waiting(format!(
            "KubeadmControlPlane {namespace}/{kcp_name} is paused"
        )));
    }

    // Control plane: template first, so the KCP never refers to a missing template.
    let cp_template = serde_json::to_value(&rendered.control_plane_template)?;
    ctx.apply(INFRA, "VSphereMachineTemplate", &cp_template)
        .await?;
    let kcp = ctx
        .apply(
            CONTROL_PLANE,
            "KubeadmControlPlane",
            &serde_json::to_value(&rendered.control_plane)?,
        )
        .await?;
    let target = cluster.spec.kubernetes_version.as_str();
    let cp_done = control_plane_done(&kcp, target);
    let cp_ready = i64_at(&kcp, &["status", "readyReplicas"]) >= 1;

    // Worker pools.
    let existing: BTreeMap<String, Value> = ctx
        .list(CAPI, "MachineDeployment")
        .await?
        .into_iter()
        .filter(|md| md["metadata"]["labels"][names::FLEDGE_CLUSTER_LABEL].as_str() == Some(name))
        .filter_map(|md| {
            let pool = md["metadata"]["labels"][names::POOL_LABEL]
                .as_str()?
                .to_owned();
            Some((pool, md))
        })
        .collect();
    let states: Vec<PoolState> = rendered
        .pools
        .iter()
        .map(|p| {
            let md = existing.get(&p.name);
            PoolState {
                current: md.and_then(|md| str_at(md, MD_VERSION)).map(str::to_owned),
                rolled_out: md.is_some_and(rolled_out),
            }
        })
        .collect();
    let plans = plan_pools(target, cp_done, &states);
    let mut outcome = CapiOutcome::Applied;
    let mut desired_templates: BTreeSet<String> = BTreeSet::new();
    desired_templates.insert(
        rendered
            .control_plane_template
            .metadata
            .name
            .clone()
            .unwrap_or_default(),
    );
    let mut applied_mds = Vec::new();
    for (pool, plan) in rendered.pools.iter().zip(&plans) {
        let mut md = serde_json::to_value(&pool.machine_deployment)?;
        let current = existing.get(&pool.name);
        if current.is_none() && !cp_ready {
            outcome = CapiOutcome::Waiting(
                "waiting for a ready control-plane machine before creating worker pools".into(),
            );
            continue;
        }
        match (plan, current) {
            (PoolPlan::Wait, _) => {
                outcome = CapiOutcome::Waiting(format!(
                    "pool {} waits for the control plane to run {target}",
                    pool.name
                ));
                continue;
            }
            (PoolPlan::Hold, Some(current)) => {
                // Keep the machines as they are: same version, same templates.
                for path in [MD_VERSION, MD_CONFIG_REF, MD_INFRA_REF] {
                    let value = path.iter().fold(current, |v, k| &v[*k]).clone();
                    let slot = path.iter().fold(&mut md, |v, k| &mut v[*k]);
                    *slot = value;
                }
                tracing::info!(pool = %pool.name, "pool held at its current version until the control plane and earlier pools are upgraded");
            }
            _ => {}
        }
        let config_template = serde_json::to_value(&pool.config_template)?;
        let machine_template = serde_json::to_value(&pool.machine_template)?;
        desired_templates.insert(
            pool.config_template
                .metadata
                .name
                .clone()
                .unwrap_or_default(),
        );
        desired_templates.insert(
            pool.machine_template
                .metadata
                .name
                .clone()
                .unwrap_or_default(),
        );
        ctx.apply(BOOTSTRAP, "KubeadmConfigTemplate", &config_template)
            .await?;
        ctx.apply(INFRA, "VSphereMachineTemplate", &machine_template)
            .await?;
        applied_mds.push(ctx.apply(CAPI, "MachineDeployment", &md).await?);
    }
    for check in &rendered.health_checks {
        ctx.apply(CAPI, "MachineHealthCheck", &serde_json::to_value(check)?)
            .await?;
    }

    // Removed pools.
    let wanted: BTreeSet<&str> = rendered.pools.iter().map(|p| p.name.as_str()).collect();
    for (pool, md) in &existing {
        if !wanted.contains(pool.as_str()) {
            let md_name = md["metadata"]["name"].as_str().unwrap_or_default();
            tracing::info!(%pool, "pool removed from the spec");
            ctx.delete(CAPI, "MachineHealthCheck", md_name).await?;
            ctx.delete(CAPI, "MachineDeployment", md_name).await?;
        }
    }

    // Unused templates.
    let mut in_use = desired_templates;
    if let Some(n) = str_at(&kcp, KCP_INFRA_REF) {
        in_use.insert(n.to_owned());
    }
    for owner in existing
        .values()
        .chain(&applied_mds)
        .chain(&ctx.list(CAPI, "MachineSet").await?)
    {
        for path in [MD_CONFIG_REF, MD_INFRA_REF] {
            if let Some(n) = str_at(owner, path) {
                in_use.insert(n.to_owned());
            }
        }
    }
    let cp_prefix = format!("{}-", render::control_plane_name(name));
    let kcp_rolled = rolled_out(&kcp);
    for (gv, kind) in [
        (INFRA, "VSphereMachineTemplate"),
        (BOOTSTRAP, "KubeadmConfigTemplate"),
    ] {
        for template in ctx.list(gv, kind).await? {
            let Some(t) = str_at(&template, &["metadata", "name"]) else {
                continue;
            };
            if template["metadata"]["labels"][names::FLEDGE_CLUSTER_LABEL].as_str() != Some(name) {
                continue;
            }
            if in_use.contains(t) || (t.starts_with(&cp_prefix) && !kcp_rolled) {
                continue;
            }
            ctx.delete(gv, kind, t).await?;
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(current: Option<&str>, rolled_out: bool) -> PoolState {
        PoolState {
            current: current.map(str::to_owned),
            rolled_out,
        }
    }

    #[test]
    fn workers_wait_for_the_control_plane_to_be_upgraded() {
        let pools = [
            pool(Some("v1.32.4"), true),
            pool(Some("v1.32.4"), true),
            pool(None, false),
        ];
        assert_eq!(
            plan_pools("v1.33.0", false, &pools),
            [PoolPlan::Hold, PoolPlan::Hold, PoolPlan::Wait]
        );
    }

    #[test]
    fn then_one_pool_at_a_time_in_spec_order() {
        let target = "v1.33.0";
        let pools = [pool(Some("v1.32.4"), true), pool(Some("v1.32.4"), true)];
        assert_eq!(
            plan_pools(target, true, &pools),
            [PoolPlan::Target, PoolPlan::Hold]
        );
        // The first pool is on the new version but still rolling: the second waits.
        let pools = [pool(Some(target), false), pool(Some("v1.32.4"), true)];
        assert_eq!(
            plan_pools(target, true, &pools),
            [PoolPlan::Target, PoolPlan::Hold]
        );
        // Rolled out: the second goes.
        let pools = [pool(Some(target), true), pool(Some("v1.32.4"), true)];
        assert_eq!(
            plan_pools(target, true, &pools),
            [PoolPlan::Target, PoolPlan::Target]
        );
    }

    #[test]
    fn without_an_upgrade_every_pool_follows_the_spec() {
        let pools = [pool(Some("v1.32.4"), false), pool(None, false)];
        assert_eq!(
            plan_pools("v1.32.4", true, &pools),
            [PoolPlan::Target, PoolPlan::Target]
        );
        // Scaling the control plane (not done with its machines yet) does not stop pools
        // that are already on the version.
        assert_eq!(
            plan_pools("v1.32.4", false, &pools[..1]),
            [PoolPlan::Target]
        );
    }

    #[test]
    fn control_plane_done_needs_every_machine_on_the_version() {
        let kcp = |version: &str, up: i64, replicas: i64, observed: i64| {
            json!({"metadata": {"generation": 4},
                   "status": {"version": version, "upToDateReplicas": up, "replicas": replicas, "observedGeneration": observed}})
        };
        assert!(control_plane_done(&kcp("v1.33.0", 3, 3, 4), "v1.33.0"));
        assert!(!control_plane_done(&kcp("v1.32.4", 3, 3, 4), "v1.33.0"));
        assert!(!control_plane_done(&kcp("v1.33.0", 2, 3, 4), "v1.33.0"));
        assert!(!control_plane_done(&kcp("v1.33.0", 3, 3, 3), "v1.33.0"));
    }

    #[test]
    fn paused_by_field_or_annotation() {
        assert!(paused(&json!({"spec": {"paused": true}})));
        assert!(paused(
            &json!({"metadata": {"annotations": {names::PAUSED_ANNOTATION: ""}}})
        ));
        assert!(!paused(&json!({"spec": {"paused": false}})));
    }
}
