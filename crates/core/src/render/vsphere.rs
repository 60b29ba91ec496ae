//! CAPV objects: the `VSphereCluster` and the `VSphereMachineTemplate`s.

use super::{CONTROL_PLANE_GROUP, Ctx, RenderError, hashed_name};
use crate::capi::{
    ApiEndpoint, NetworkDevice, VSphereCluster, VSphereClusterSpec, VSphereIdentityKind,
    VSphereIdentityReference, VSphereMachineSpec, VSphereMachineTemplate,
    VSphereMachineTemplateResource, VSphereMachineTemplateSpec, VSphereNetwork,
};
use crate::spec::MachineShape;

pub(super) fn vsphere_cluster(ctx: &Ctx<'_>) -> VSphereCluster {
    let endpoint = &ctx.spec.control_plane.endpoint;
    let mut cluster = VSphereCluster::new(
        ctx.name,
        VSphereClusterSpec {
            server: ctx.vsphere.server.clone(),
            thumbprint: ctx.vsphere.thumbprint.clone(),
            control_plane_endpoint: Some(ApiEndpoint {
                host: endpoint.host.clone(),
                port: endpoint.port,
            }),
            identity_ref: Some(VSphereIdentityReference {
                kind: VSphereIdentityKind::Secret,
                name: ctx.vsphere.credentials_secret.clone(),
            }),
        },
    );
    cluster.metadata = ctx.meta(ctx.name.to_owned(), &[]);
    cluster
}

pub(super) fn control_plane_template(ctx: &Ctx<'_>) -> Result<VSphereMachineTemplate, RenderError> {
    let cp = &ctx.spec.control_plane;
    machine_template(
        ctx,
        CONTROL_PLANE_GROUP,
        &cp.machine,
        cp.template.as_deref(),
        &[],
    )
}

/// The template of a node group. Its name hashes the whole spec, so any change to where
/// or how the VMs are cloned yields a new template, which is what makes Cluster API roll
/// the group's machines.
pub(super) fn machine_template(
    ctx: &Ctx<'_>,
    group: &str,
    shape: &MachineShape,
    os_template: Option<&str>,
    extra_labels: &[(&str, &str)],
) -> Result<VSphereMachineTemplate, RenderError> {
    let vsphere = ctx.vsphere;
    let spec = VSphereMachineTemplateSpec {
        template: VSphereMachineTemplateResource {
            spec: VSphereMachineSpec {
                server: Some(vsphere.server.clone()),
                thumbprint: vsphere.thumbprint.clone(),
                datacenter: Some(vsphere.datacenter.clone()),
                datastore: Some(vsphere.datastore.clone()),
                folder: vsphere.folder.clone(),
                resource_pool: vsphere.resource_pool.clone(),
                template: os_template.unwrap_or(&vsphere.template).to_owned(),
                // A full clone needs no snapshot on the template and leaves the VM
                // independent of it, at the price of a slower clone.
                clone_mode: Some("fullClone".to_owned()),
                num_cpus: Some(shape.cpus),
                memory_mib: Some(shape.memory_mib),
                disk_gib: Some(shape.disk_gib),
                os: Some("Linux".to_owned()),
                network: VSphereNetwork {
                    devices: vec![NetworkDevice {
                        network_name: vsphere.network.clone(),
                        dhcp4: Some(true),
                    }],
                },
            },
        },
    };
    let name = hashed_name("VSphereMachineTemplate", ctx.name, group, &spec)?;
    let mut template = VSphereMachineTemplate::new(&name, spec);
    template.metadata = ctx.meta(name, extra_labels);
    Ok(template)
}
