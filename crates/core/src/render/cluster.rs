//! The Cluster API `Cluster`.

use super::{Ctx, control_plane_name};
use crate::capi::{
    CONTROL_PLANE_GROUP, Cluster, ClusterNetwork, ClusterSpec, ContractVersionedObjectReference,
    INFRASTRUCTURE_GROUP, NetworkRanges,
};

pub(super) fn cluster(ctx: &Ctx<'_>) -> Cluster {
    let network = &ctx.spec.network;
    let mut cluster = Cluster::new(
        ctx.name,
        ClusterSpec {
            paused: None,
            cluster_network: Some(ClusterNetwork {
                // kubeadm binds the API server to this port on every control-plane node;
                // kube-vip forwards the endpoint to the same port, so they must agree.
                api_server_port: Some(ctx.spec.control_plane.endpoint.port),
                pods: Some(NetworkRanges {
                    cidr_blocks: vec![network.pods.clone()],
                }),
                services: Some(NetworkRanges {
                    cidr_blocks: vec![network.services.clone()],
                }),
                service_domain: network.service_domain.clone(),
            }),
            // Left to Cluster API, which copies it from the VSphereCluster.
            control_plane_endpoint: None,
            control_plane_ref: Some(ContractVersionedObjectReference {
                api_group: CONTROL_PLANE_GROUP.to_owned(),
                kind: "KubeadmControlPlane".to_owned(),
                name: control_plane_name(ctx.name),
            }),
            infrastructure_ref: Some(ContractVersionedObjectReference {
                api_group: INFRASTRUCTURE_GROUP.to_owned(),
                kind: "VSphereCluster".to_owned(),
                name: ctx.name.to_owned(),
            }),
        },
    );
    cluster.metadata = ctx.meta(ctx.name.to_owned(), &[]);
    cluster
}
