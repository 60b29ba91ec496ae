//! `MachineHealthCheck`s: when a machine counts as dead and is replaced.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Ctx, RenderedPool, control_plane_name};
use crate::capi::{
    MachineHealthCheck, MachineHealthCheckChecks, MachineHealthCheckRemediation,
    MachineHealthCheckSpec, RemediationTrigger, UnhealthyNodeCondition,
};
use crate::names;

/// A VM that has no node after 10 minutes never will (Cluster API's default).
const NODE_STARTUP_TIMEOUT_SECONDS: i32 = 600;
/// A node that is not Ready for 5 minutes is replaced.
const NOT_READY_TIMEOUT_SECONDS: i32 = 300;
/// Workers are remediated only while at most this share of a pool is unhealthy: beyond
/// it, the cause is likely shared (network, vCenter) and replacing machines would not help.
const MAX_UNHEALTHY_WORKERS: &str = "40%";

/// The control plane's check. KubeadmControlPlane remediates on its own terms and never
/// below etcd quorum, so no extra threshold is needed.
pub(super) fn control_plane(ctx: &Ctx<'_>) -> MachineHealthCheck {
    let name = control_plane_name(ctx.name);
    check(
        ctx,
        name,
        BTreeMap::from([
            (names::CLUSTER_NAME_LABEL.to_owned(), ctx.name.to_owned()),
            (names::CONTROL_PLANE_LABEL.to_owned(), String::new()),
        ]),
        None,
        &[],
    )
}

/// A pool's check, selecting the machines of its MachineDeployment.
pub(super) fn pool(ctx: &Ctx<'_>, pool: &RenderedPool) -> MachineHealthCheck {
    let md_name = pool
        .machine_deployment
        .metadata
        .name
        .clone()
        .unwrap_or_default();
    check(
        ctx,
        md_name.clone(),
        BTreeMap::from([
            (names::CLUSTER_NAME_LABEL.to_owned(), ctx.name.to_owned()),
            (names::DEPLOYMENT_NAME_LABEL.to_owned(), md_name),
        ]),
        Some(MachineHealthCheckRemediation {
            trigger_if: Some(RemediationTrigger {
                unhealthy_less_than_or_equal_to: Some(IntOrString::String(
                    MAX_UNHEALTHY_WORKERS.to_owned(),
                )),
            }),
        }),
        &[(names::POOL_LABEL, pool.name.as_str())],
    )
}

fn check(
    ctx: &Ctx<'_>,
    name: String,
    selector: BTreeMap<String, String>,
    remediation: Option<MachineHealthCheckRemediation>,
    extra_labels: &[(&str, &str)],
) -> MachineHealthCheck {
    let not_ready = |status: &str| UnhealthyNodeCondition {
        type_: "Ready".to_owned(),
        status: status.to_owned(),
        timeout_seconds: NOT_READY_TIMEOUT_SECONDS,
    };
    let mut mhc = MachineHealthCheck::new(
        &name,
        MachineHealthCheckSpec {
            cluster_name: ctx.name.to_owned(),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            checks: Some(MachineHealthCheckChecks {
                node_startup_timeout_seconds: Some(NODE_STARTUP_TIMEOUT_SECONDS),
                unhealthy_node_conditions: vec![not_ready("False"), not_ready("Unknown")],
            }),
            remediation,
        },
    );
    mhc.metadata = ctx.meta(name, extra_labels);
    mhc
}
