//! A worker pool: `KubeadmConfigTemplate`, `VSphereMachineTemplate`, `MachineDeployment`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    CONTROL_PLANE_GROUP, Ctx, RenderError, RenderedPool, hashed_name, machine_deployment_name,
    node, vsphere,
};
use crate::capi::{
    BOOTSTRAP_GROUP, Bootstrap, ContractVersionedObjectReference, INFRASTRUCTURE_GROUP,
    JoinConfiguration, KubeadmConfigSpec, KubeadmConfigTemplate, KubeadmConfigTemplateResource,
    KubeadmConfigTemplateSpec, MachineDeployment, MachineDeploymentRollout,
    MachineDeploymentRolloutStrategy, MachineDeploymentSpec, MachineSpec, MachineTemplateSpec,
    NodeTaint, RollingUpdate, TemplateMetadata,
};
use crate::names;
use crate::spec::{TaintEffect, WorkerPool};

/// Longest MachineDeployment name: Cluster API copies it into a label value.
const MAX_DEPLOYMENT_NAME: usize = 63;

pub(super) fn pool(
    ctx: &Ctx<'_>,
    index: usize,
    pool: &WorkerPool,
) -> Result<RenderedPool, RenderError> {
    if pool.name == CONTROL_PLANE_GROUP {
        return Err(RenderError::ReservedPoolName {
            index,
            name: pool.name.clone(),
        });
    }
    let md_name = machine_deployment_name(ctx.name, &pool.name);
    if md_name.len() > MAX_DEPLOYMENT_NAME {
        return Err(RenderError::NameTooLong {
            path: format!("spec.workers[{index}].name"),
            name: md_name,
            max: MAX_DEPLOYMENT_NAME,
        });
    }
    let pool_label = [(names::POOL_LABEL, pool.name.as_str())];
    let config_template = config_template(ctx, pool, &pool_label)?;
    let machine_template = vsphere::machine_template(
        ctx,
        &pool.name,
        &pool.machine,
        pool.template.as_deref(),
        &pool_label,
    )?;
    let machine_deployment = machine_deployment(
        ctx,
        pool,
        md_name,
        name_of(&config_template.metadata.name),
        name_of(&machine_template.metadata.name),
    );
    Ok(RenderedPool {
        name: pool.name.clone(),
        config_template,
        machine_template,
        machine_deployment,
    })
}

/// How the pool's nodes join: its labels and taints go to the kubelet through kubeadm's
/// node registration, which is the only way they are on the node from its first moment
/// (a MachineDeployment's own labels reach nodes only in the `node.cluster.x-k8s.io`
/// domain).
fn config_template(
    ctx: &Ctx<'_>,
    pool: &WorkerPool,
    extra_labels: &[(&str, &str)],
) -> Result<KubeadmConfigTemplate, RenderError> {
    let mut extra_args = Vec::new();
    if !pool.labels.is_empty() {
        let labels: Vec<String> = pool
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        extra_args.push(node::arg("node-labels", &labels.join(",")));
    }
    let taints = (!pool.taints.is_empty()).then(|| {
        pool.taints
            .iter()
            .map(|t| NodeTaint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: effect_str(t.effect).to_owned(),
            })
            .collect()
    });
    let spec = KubeadmConfigTemplateSpec {
        template: KubeadmConfigTemplateResource {
            metadata: None,
            spec: KubeadmConfigSpec {
                join_configuration: Some(JoinConfiguration {
                    control_plane: None,
                    node_registration: Some(node::node_registration(extra_args, taints)),
                }),
                pre_kubeadm_commands: node::hostname_commands(),
                users: node::users(ctx),
                ..KubeadmConfigSpec::default()
            },
        },
    };
    let name = hashed_name("KubeadmConfigTemplate", ctx.name, &pool.name, &spec)?;
    let mut template = KubeadmConfigTemplate::new(&name, spec);
    template.metadata = ctx.meta(name, extra_labels);
    Ok(template)
}

fn machine_deployment(
    ctx: &Ctx<'_>,
    pool: &WorkerPool,
    name: String,
    config_template: String,
    machine_template: String,
) -> MachineDeployment {
    let selector_labels = BTreeMap::from([
        (names::CLUSTER_NAME_LABEL.to_owned(), ctx.name.to_owned()),
        (names::DEPLOYMENT_NAME_LABEL.to_owned(), name.clone()),
    ]);
    let mut machine_labels = ctx.labels();
    machine_labels.extend(selector_labels.clone());
    machine_labels.insert(names::POOL_LABEL.to_owned(), pool.name.clone());
    let replicas = match &pool.autoscaling {
        Some(_) => None,
        None => Some(pool.replicas.unwrap_or(0)),
    };
    let mut md = MachineDeployment::new(
        &name,
        MachineDeploymentSpec {
            cluster_name: ctx.name.to_owned(),
            replicas,
            rollout: Some(MachineDeploymentRollout {
                after: ctx.rotate_after(),
                // Surge one, never lose one: a pool keeps its capacity while it rolls.
                strategy: Some(MachineDeploymentRolloutStrategy {
                    type_: "RollingUpdate".to_owned(),
                    rolling_update: Some(RollingUpdate {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels),
                match_expressions: None,
            },
            template: MachineTemplateSpec {
                metadata: Some(TemplateMetadata {
                    labels: machine_labels,
                    annotations: BTreeMap::new(),
                }),
                spec: MachineSpec {
                    cluster_name: ctx.name.to_owned(),
                    version: Some(ctx.spec.kubernetes_version.clone()),
                    bootstrap: Bootstrap {
                        config_ref: Some(ContractVersionedObjectReference {
                            api_group: BOOTSTRAP_GROUP.to_owned(),
                            kind: "KubeadmConfigTemplate".to_owned(),
                            name: config_template,
                        }),
                        data_secret_name: None,
                    },
                    infrastructure_ref: ContractVersionedObjectReference {
                        api_group: INFRASTRUCTURE_GROUP.to_owned(),
                        kind: "VSphereMachineTemplate".to_owned(),
                        name: machine_template,
                    },
                },
            },
        },
    );
    md.metadata = ctx.meta(name, &[(names::POOL_LABEL, pool.name.as_str())]);
    if let Some(autoscaling) = &pool.autoscaling {
        md.metadata.annotations = Some(BTreeMap::from([
            (
                names::AUTOSCALER_MIN_SIZE_ANNOTATION.to_owned(),
                autoscaling.min_replicas.to_string(),
            ),
            (
                names::AUTOSCALER_MAX_SIZE_ANNOTATION.to_owned(),
                autoscaling.max_replicas.to_string(),
            ),
        ]));
    }
    md
}

fn effect_str(effect: TaintEffect) -> &'static str {
    match effect {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

fn name_of(name: &Option<String>) -> String {
    name.clone().unwrap_or_default()
}
