//! The kubeadm bootstrap controller: one bootstrap data Secret per KubeadmConfig (named like
//! the config, key `value`, type `cluster.x-k8s.io/secret`), once the Cluster's infrastructure
//! is ready, and for joining machines once the control plane is initialized.
//!
//! The data is a cloud-config whose first line carries, for the simulated VM, what the real
//! one would learn by running it: `kubeadm init` or `join`, the role, version and taints.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tracing::info;

use super::{
    CAPI, CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, Cond, Ctx, Result, deleting, get, name, ns,
    owner_of_kind, owner_ref, set_conditions, write_status,
};

/// The first-line marker of simulated bootstrap data.
const MARKER: &str = "## fledge-sim bootstrap ";

/// What a VM learns from its bootstrap data.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapInfo {
    /// `kubeadm init` (else `kubeadm join`).
    pub init: bool,
    /// Joins as a control-plane member.
    pub control_plane: bool,
    /// The kubelet's version.
    pub version: String,
    /// `nodeRegistration.taints` if set (kubeadm's default applies otherwise).
    pub taints: Option<Vec<Value>>,
}

impl BootstrapInfo {
    /// Reads the bootstrap data Secret.
    pub fn from_secret(secret: &Value) -> Option<Self> {
        let data = STANDARD.decode(secret["data"]["value"].as_str()?).ok()?;
        let text = String::from_utf8(data).ok()?;
        let header: Value =
            serde_json::from_str(text.lines().next()?.strip_prefix(MARKER)?).ok()?;
        Some(BootstrapInfo {
            init: header["init"] == true,
            control_plane: header["controlPlane"] == true,
            version: header["version"].as_str().unwrap_or_default().to_owned(),
            taints: header["taints"].as_array().cloned(),
        })
    }

    /// The Node's taints: the configured ones, or kubeadm's default control-plane taint.
    pub fn taints(&self, control_plane: bool) -> Vec<Value> {
        match &self.taints {
            Some(t) => t.clone(),
            None if control_plane => vec![json!({
                "key": "node-role.kubernetes.io/control-plane",
                "effect": "NoSchedule",
            })],
            None => Vec::new(),
        }
    }

    fn to_cloud_config(&self, machine: &str) -> String {
        let header = json!({
            "init": self.init,
            "controlPlane": self.control_plane,
            "version": self.version,
            "taints": self.taints,
        });
        let command = if self.init {
            "kubeadm init"
        } else {
            "kubeadm join"
        };
        format!(
            "{MARKER}{header}\n#cloud-config\nhostname: {machine}\nruncmd:\n  - '{command} --config /run/kubeadm/kubeadm.yaml'\n"
        )
    }
}

/// Reconciles one KubeadmConfig.
pub fn reconcile(ctx: &Ctx<'_>, kc: &Value) -> Result {
    if deleting(kc) || ctx.paused(kc) {
        return Ok(());
    }
    let namespace = ns(kc);
    let Some(owner) = owner_of_kind(kc, "Machine") else {
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
    let cluster = super::cluster_name_of(kc)
        .or_else(|| super::cluster_name_of(&machine))
        .and_then(|c| ctx.cluster(namespace, c));
    let Some(cluster) = cluster else {
        return Ok(());
    };
    let spec = &kc["spec"];
    let init = !spec["initConfiguration"].is_null() && spec["joinConfiguration"].is_null()
        || (!spec["clusterConfiguration"].is_null() && spec["joinConfiguration"].is_null());
    let infra_ready = cluster["status"]["initialization"]["infrastructureProvisioned"] == true;
    let cp_initialized = cluster["status"]["initialization"]["controlPlaneInitialized"] == true;
    let old = &kc["status"];
    let waiting = if !infra_ready {
        Some((
            "WaitingForClusterInfrastructureReady",
            "Waiting for the Cluster's infrastructure",
        ))
    } else if !init && !cp_initialized {
        Some((
            "WaitingForControlPlaneInitialized",
            "Waiting for the control plane to be initialized",
        ))
    } else {
        None
    };
    if let Some((reason, message)) = waiting {
        let mut status = json!({"initialization": {"dataSecretCreated": false}});
        let conds = [
            Cond::new("Ready", false, reason, message),
            Cond::new("DataSecretAvailable", false, reason, message),
        ];
        set_conditions(&mut status, old, &kc["metadata"]["generation"], &conds);
        return write_status(ctx.api, kc, status);
    }
    if get(ctx.api, "v1", "Secret", namespace, name(kc))?.is_none() {
        let registration = if init {
            &spec["initConfiguration"]["nodeRegistration"]
        } else {
            &spec["joinConfiguration"]["nodeRegistration"]
        };
        let info = BootstrapInfo {
            init,
            control_plane: !machine["metadata"]["labels"][CONTROL_PLANE_LABEL].is_null(),
            version: machine["spec"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            taints: registration["taints"].as_array().cloned(),
        };
        info!(
            kubeadmconfig = name(kc),
            init, "Creating bootstrap data secret"
        );
        ctx.api.create_object(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "cluster.x-k8s.io/secret",
            "metadata": {
                "name": name(kc),
                "namespace": namespace,
                "labels": {CLUSTER_NAME_LABEL: super::name(cluster)},
                "ownerReferences": [owner_ref(kc, true)],
            },
            "data": {
                "value": STANDARD.encode(info.to_cloud_config(name(&machine))),
                "format": STANDARD.encode("cloud-config"),
            },
        }))?;
    }
    let mut status = json!({
        "observedGeneration": kc["metadata"]["generation"],
        "dataSecretName": name(kc),
        "initialization": {"dataSecretCreated": true},
    });
    let conds = [
        Cond::new("Ready", true, "Ready", ""),
        Cond::new("DataSecretAvailable", true, "Available", ""),
        Cond::new("CertificatesAvailable", true, "Available", ""),
        Cond::new("Paused", false, "NotPaused", ""),
    ];
    set_conditions(&mut status, old, &kc["metadata"]["generation"], &conds);
    write_status(ctx.api, kc, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_info_round_trips_through_the_secret() {
        let info = BootstrapInfo {
            init: true,
            control_plane: true,
            version: "v1.32.4".into(),
            taints: Some(vec![]),
        };
        let secret = json!({"data": {"value": STANDARD.encode(info.to_cloud_config("m"))}});
        let back = BootstrapInfo::from_secret(&secret).unwrap();
        assert_eq!(back, info);
        assert!(back.taints(true).is_empty());
        let default = BootstrapInfo {
            taints: None,
            ..info
        };
        assert_eq!(default.taints(true).len(), 1);
    }
}
