//! The vSphere provider's controllers: VSphereCluster (ready once its credentials Secret holds
//! a username and password), VSphereMachine (one VSphereVM per Machine once bootstrap data
//! exists; `providerID: vsphere://<uuid>`), VSphereVM (clones and powers on a VM in the
//! simulated vCenter).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tracing::info;

use super::{
    CAPI, CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, Cond, Ctx, INFRA, Result, delete, deleting,
    ensure_finalizer, get, name, ns, owner_of_kind, owner_ref, remove_finalizer, set_conditions,
    write_status,
};
use crate::controllers::kubeadm_config::BootstrapInfo;
use crate::vsphere::{VmPhase, VmSpec};

/// The VSphereMachine finalizer.
pub const MACHINE_FINALIZER: &str = "vspheremachine.infrastructure.cluster.x-k8s.io";
/// The VSphereVM finalizer.
pub const VM_FINALIZER: &str = "vspherevm.infrastructure.cluster.x-k8s.io";

fn secret_has(secret: &Value, key: &str) -> bool {
    secret["data"][key]
        .as_str()
        .and_then(|v| STANDARD.decode(v).ok())
        .is_some_and(|v| !v.is_empty())
        || secret["stringData"][key]
            .as_str()
            .is_some_and(|v| !v.is_empty())
}

/// Reconciles one VSphereCluster.
pub fn reconcile_cluster(ctx: &Ctx<'_>, vc: &Value) -> Result {
    if deleting(vc) || ctx.paused(vc) {
        return Ok(());
    }
    let namespace = ns(vc);
    let identity = &vc["spec"]["identityRef"];
    let credentials: std::result::Result<(), String> = match (
        identity["kind"].as_str(),
        identity["name"].as_str(),
    ) {
        (Some("Secret"), Some(secret_name)) => {
            match get(ctx.api, "v1", "Secret", namespace, secret_name)? {
                None => Err(format!(
                    "Secret {namespace}/{secret_name} referenced by spec.identityRef not found"
                )),
                Some(s) if secret_has(&s, "username") && secret_has(&s, "password") => Ok(()),
                Some(_) => Err(format!(
                    "Secret {namespace}/{secret_name} referenced by spec.identityRef must contain username and password"
                )),
            }
        }
        // Identities other than a Secret (VSphereClusterIdentity) and none at all fall back to
        // the manager's own credentials, which the simulated vCenter always accepts.
        _ => Ok(()),
    };
    let ok = credentials.is_ok();
    let message = credentials.err().unwrap_or_default();
    let mut status = json!({
        "initialization": {"provisioned": ok},
        "vCenterVersion": "8.0.3",
    });
    let conds = [
        Cond::new(
            "Ready",
            ok,
            if ok { "Ready" } else { "NotReady" },
            message.clone(),
        ),
        Cond::new(
            "VCenterAvailable",
            ok,
            if ok {
                "Available"
            } else {
                "CredentialsNotValid"
            },
            message,
        ),
        Cond::new("Paused", false, "NotPaused", ""),
    ];
    set_conditions(
        &mut status,
        &vc["status"],
        &vc["metadata"]["generation"],
        &conds,
    );
    if !ok {
        // The Secret may appear later; Secrets are watched, but come back anyway.
        ctx.requeue_after(Duration::from_secs(30));
    }
    write_status(ctx.api, vc, status)
}

/// Reconciles one VSphereMachine.
pub fn reconcile_machine(ctx: &Ctx<'_>, vm: &Value) -> Result {
    // Paused first, as upstream (see `machine::reconcile`).
    if ctx.paused(vm) {
        return Ok(());
    }
    let namespace = ns(vm);
    if deleting(vm) {
        if get(ctx.api, INFRA, "VSphereVM", namespace, name(vm))?.is_some() {
            delete(ctx.api, INFRA, "VSphereVM", namespace, name(vm))?;
            return Ok(());
        }
        return remove_finalizer(ctx.api, vm, MACHINE_FINALIZER);
    }
    let vm = &ensure_finalizer(ctx.api, vm, MACHINE_FINALIZER)?;
    let Some(owner) = owner_of_kind(vm, "Machine") else {
        return Ok(());
    };
    let Some(machine) = get(
        ctx.api,
        CAPI,
        "Machine",
        namespace,
        owner["name"].as_str().unwrap_or_default(),
    )?
    else {
        return Ok(());
    };
    let cluster_ready = super::cluster_name_of(vm)
        .and_then(|c| ctx.cluster(namespace, c))
        .is_some_and(|c| c["status"]["initialization"]["infrastructureProvisioned"] == true);
    let data_secret = machine["spec"]["bootstrap"]["dataSecretName"].as_str();
    let old = &vm["status"];
    let mut status = json!({"initialization": {"provisioned": false}});
    let waiting = if !cluster_ready {
        Some((
            "WaitingForClusterInfrastructureReady",
            "Waiting for the Cluster's infrastructure",
        ))
    } else if data_secret.is_none() {
        Some(("WaitingForBootstrapData", "Waiting for bootstrap data"))
    } else {
        None
    };
    if let Some((reason, message)) = waiting {
        let conds = [
            Cond::new("Ready", false, reason, message),
            Cond::new("VirtualMachineProvisioned", false, reason, message),
        ];
        set_conditions(&mut status, old, &vm["metadata"]["generation"], &conds);
        return write_status(ctx.api, vm, status);
    }
    let vsvm = match get(ctx.api, INFRA, "VSphereVM", namespace, name(vm))? {
        Some(v) => v,
        None => {
            let spec = &vm["spec"];
            let mut labels = json!({});
            for key in [CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL] {
                if let Some(v) = machine["metadata"]["labels"][key].as_str() {
                    labels[key] = json!(v);
                }
            }
            info!(vspheremachine = name(vm), "Creating VSphereVM");
            ctx.api.create_object(json!({
                "apiVersion": INFRA,
                "kind": "VSphereVM",
                "metadata": {
                    "name": name(vm),
                    "namespace": namespace,
                    "labels": labels,
                    "ownerReferences": [owner_ref(vm, true)],
                },
                "spec": {
                    "server": spec["server"],
                    "datacenter": spec["datacenter"],
                    "datastore": spec["datastore"],
                    "template": spec["template"],
                    "cloneMode": spec["cloneMode"],
                    "numCPUs": spec["numCPUs"],
                    "memoryMiB": spec["memoryMiB"],
                    "diskGiB": spec["diskGiB"],
                    "network": spec["network"],
                    "os": spec["os"],
                    "bootstrapRef": {"apiVersion": "v1", "kind": "Secret", "name": data_secret, "namespace": namespace},
                },
            }))?
        }
    };
    let ready = vsvm["status"]["ready"] == true;
    let uuid = vsvm["spec"]["biosUUID"].as_str().unwrap_or_default();
    if ready && !uuid.is_empty() {
        let provider_id = format!("vsphere://{uuid}");
        if vm["spec"]["providerID"] != provider_id.as_str() {
            let mut updated = vm.clone();
            updated["spec"]["providerID"] = json!(provider_id);
            ctx.api.update_object(updated)?;
            return Ok(());
        }
        status["initialization"]["provisioned"] = json!(true);
        status["addresses"] = vsvm["status"]["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|ip| json!({"type": "InternalIP", "address": ip}))
                    .collect::<Vec<_>>()
            })
            .map_or(json!([]), |v| json!(v));
    }
    let reason = if ready { "Provisioned" } else { "Provisioning" };
    let conds = [
        Cond::new("Ready", ready, if ready { "Ready" } else { "NotReady" }, ""),
        Cond::new("VirtualMachineProvisioned", ready, reason, ""),
        Cond::new("Paused", false, "NotPaused", ""),
    ];
    set_conditions(&mut status, old, &vm["metadata"]["generation"], &conds);
    write_status(ctx.api, vm, status)
}

/// Reconciles one VSphereVM.
pub fn reconcile_vm(ctx: &Ctx<'_>, vm: &Value) -> Result {
    // Paused first, as upstream: deleting a paused VSphereVM (as a move does in its source)
    // must never destroy the VM.
    if ctx.paused(vm) {
        return Ok(());
    }
    let namespace = ns(vm);
    if deleting(vm) {
        if ctx.world.vcenter().delete(namespace, name(vm)) {
            info!(vspherevm = name(vm), "Destroyed VM");
        }
        return remove_finalizer(ctx.api, vm, VM_FINALIZER);
    }
    let vm = &ensure_finalizer(ctx.api, vm, VM_FINALIZER)?;
    let bootstrap = vm["spec"]["bootstrapRef"]["name"]
        .as_str()
        .map(|n| get(ctx.api, "v1", "Secret", namespace, n))
        .transpose()?
        .flatten()
        .and_then(|s| BootstrapInfo::from_secret(&s));
    let Some(bootstrap) = bootstrap else {
        return Ok(());
    };
    let control_plane = !vm["metadata"]["labels"][CONTROL_PLANE_LABEL].is_null();
    let spec = VmSpec {
        namespace: namespace.to_owned(),
        name: name(vm).to_owned(),
        cluster: super::cluster_name_of(vm).unwrap_or_default().to_owned(),
        host: ctx.host.to_owned(),
        init: bootstrap.init,
        control_plane,
        version: bootstrap.version.clone(),
        taints: bootstrap.taints(control_plane),
        cpus: vm["spec"]["numCPUs"].as_u64().unwrap_or(2),
        memory_mib: vm["spec"]["memoryMiB"].as_u64().unwrap_or(4096),
        disk_gib: vm["spec"]["diskGiB"].as_u64().unwrap_or(40),
    };
    let old = &vm["status"];
    let mut status = json!({"ready": false, "cloneMode": vm["spec"]["cloneMode"]});
    match ctx.world.vcenter().clone_or_get(&spec) {
        Err(e) => {
            let conds = [
                Cond::new("Ready", false, "NotReady", e.to_string()),
                Cond::new(
                    "VirtualMachineProvisioned",
                    false,
                    match e {
                        crate::vsphere::VsphereError::CloneFailed { .. } => "CloningFailed",
                        crate::vsphere::VsphereError::NotFound { .. } => "NotFound",
                    },
                    e.to_string(),
                ),
            ];
            set_conditions(&mut status, old, &vm["metadata"]["generation"], &conds);
            ctx.requeue_after(Duration::from_secs(20));
            write_status(ctx.api, vm, status)
        }
        Ok(state) => {
            if vm["spec"]["biosUUID"] != state.uuid.as_str() {
                let mut updated = vm.clone();
                updated["spec"]["biosUUID"] = json!(state.uuid);
                ctx.api.update_object(updated)?;
                return Ok(());
            }
            if let Some(at) = state.next_change {
                ctx.requeue_at(at);
            }
            let running = state.phase == VmPhase::Running;
            if state.phase != VmPhase::Cloning {
                status["addresses"] = json!([state.ip]);
                status["vmRef"] = json!(format!("vm-{}", &state.uuid[..8]));
            }
            status["ready"] = json!(running);
            let (reason, message) = match state.phase {
                VmPhase::Cloning => ("Cloning", "Cloning the VM from its template"),
                VmPhase::Booting => ("PoweringOn", "Waiting for the VM to boot"),
                VmPhase::Running => ("Provisioned", ""),
            };
            let conds = [
                Cond::new(
                    "Ready",
                    running,
                    if running { "Ready" } else { "NotReady" },
                    message,
                ),
                Cond::new("VirtualMachineProvisioned", running, reason, message),
                Cond::new("Paused", false, "NotPaused", ""),
            ];
            set_conditions(&mut status, old, &vm["metadata"]["generation"], &conds);
            write_status(ctx.api, vm, status)
        }
    }
}
