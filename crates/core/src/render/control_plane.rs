//! The `KubeadmControlPlane`.

use super::{Ctx, RenderError, control_plane_name, kube_vip, node};
use crate::capi::{
    ClusterConfiguration, ContractVersionedObjectReference, ControlPlaneComponent,
    INFRASTRUCTURE_GROUP, InitConfiguration, JoinConfiguration, JoinControlPlane,
    KubeadmConfigSpec, KubeadmControlPlane, KubeadmControlPlaneMachineTemplate,
    KubeadmControlPlaneMachineTemplateSpec, KubeadmControlPlaneRollout, KubeadmControlPlaneSpec,
    RolloutBefore, TemplateMetadata, VSphereMachineTemplate,
};

/// Days before certificate expiry at which control-plane machines are replaced when the
/// spec does not say (kubeadm certificates last a year).
pub const DEFAULT_RENEW_BEFORE_EXPIRY_DAYS: i32 = 30;

pub(super) fn kubeadm_control_plane(
    ctx: &Ctx<'_>,
    replicas: i32,
    machine_template: &VSphereMachineTemplate,
) -> Result<KubeadmControlPlane, RenderError> {
    let name = control_plane_name(ctx.name);
    let renew_before_expiry_days = ctx
        .spec
        .certificates
        .as_ref()
        .and_then(|c| c.renew_before_expiry_days)
        .unwrap_or(DEFAULT_RENEW_BEFORE_EXPIRY_DAYS);
    let mut pre_kubeadm_commands = node::hostname_commands();
    pre_kubeadm_commands.extend(kube_vip::pre_kubeadm_command(ctx));
    // Without worker pools the control plane is the only place workloads can run, so it
    // registers without kubeadm's control-plane taint (an empty list, not an absent one).
    let taints = ctx.spec.workers.is_empty().then(Vec::new);
    let kubeadm_config_spec = KubeadmConfigSpec {
        cluster_configuration: Some(ClusterConfiguration {
            api_server: None,
            controller_manager: Some(ControlPlaneComponent {
                extra_args: vec![node::arg("cloud-provider", "external")],
            }),
        }),
        init_configuration: Some(InitConfiguration {
            local_api_endpoint: None,
            node_registration: Some(node::node_registration(Vec::new(), taints.clone())),
        }),
        join_configuration: Some(JoinConfiguration {
            control_plane: Some(JoinControlPlane::default()),
            node_registration: Some(node::node_registration(Vec::new(), taints)),
        }),
        files: kube_vip::files(ctx)?,
        pre_kubeadm_commands,
        post_kubeadm_commands: kube_vip::post_kubeadm_command(ctx).into_iter().collect(),
        users: node::users(ctx),
    };
    let mut kcp = KubeadmControlPlane::new(
        &name,
        KubeadmControlPlaneSpec {
            replicas: Some(replicas),
            version: ctx.spec.kubernetes_version.clone(),
            machine_template: KubeadmControlPlaneMachineTemplate {
                metadata: Some(TemplateMetadata {
                    labels: ctx.labels(),
                    annotations: Default::default(),
                }),
                spec: KubeadmControlPlaneMachineTemplateSpec {
                    infrastructure_ref: ContractVersionedObjectReference {
                        api_group: INFRASTRUCTURE_GROUP.to_owned(),
                        kind: "VSphereMachineTemplate".to_owned(),
                        name: machine_template.metadata.name.clone().unwrap_or_default(),
                    },
                },
            },
            kubeadm_config_spec,
            rollout: Some(KubeadmControlPlaneRollout {
                after: ctx.rotate_after(),
                before: Some(RolloutBefore {
                    certificates_expiry_days: Some(renew_before_expiry_days),
                }),
            }),
        },
    );
    kcp.metadata = ctx.meta(name, &[]);
    Ok(kcp)
}
