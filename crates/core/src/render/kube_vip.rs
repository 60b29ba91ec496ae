//! kube-vip, which serves the control-plane endpoint: a static pod on every control-plane
//! node, written by cloud-init before kubeadm runs, as CAPV's own cluster templates do.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, HostPathVolumeSource, Pod, PodSpec, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Ctx, RenderError, to_value, to_yaml_stream};
use crate::capi::File;

/// kube-vip image; bump deliberately, since it changes every control-plane machine.
pub(super) const IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.8.9";
const MANIFEST_PATH: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
const HOSTS_PATH: &str = "/etc/kube-vip.hosts";
const KUBECONFIG_SCRIPT_PATH: &str = "/etc/kube-vip-kubeconfig.sh";

/// Since Kubernetes 1.29, `admin.conf` has no rights until `kubeadm init` has finished, but
/// kube-vip must serve the endpoint before that (kube-vip/kube-vip#684). On the first node
/// it therefore reads `super-admin.conf` during init and goes back to `admin.conf` after.
const KUBECONFIG_SCRIPT: &str = r#"#!/bin/sh
# Points kube-vip at super-admin.conf while kubeadm init runs (Kubernetes >= 1.29
# grants admin.conf nothing until init is done), and back to admin.conf afterwards.
set -e
manifest=/etc/kubernetes/manifests/kube-vip.yaml
case "$1" in
init)
  # Only the first control-plane node runs kubeadm init; joining nodes have admin.conf.
  if [ -f /run/kubeadm/kubeadm.yaml ]; then
    sed -i 's#path: /etc/kubernetes/admin.conf#path: /etc/kubernetes/super-admin.conf#' "$manifest"
  fi
  ;;
restore)
  sed -i 's#path: /etc/kubernetes/super-admin.conf#path: /etc/kubernetes/admin.conf#' "$manifest"
  ;;
esac
"#;

/// Whether this Kubernetes version needs the super-admin.conf workaround.
pub(super) fn needs_super_admin(ctx: &Ctx<'_>) -> bool {
    (ctx.version.major, ctx.version.minor) >= (1, 29)
}

/// Command run before kubeadm on control-plane nodes, if any.
pub(super) fn pre_kubeadm_command(ctx: &Ctx<'_>) -> Option<String> {
    needs_super_admin(ctx).then(|| format!("{KUBECONFIG_SCRIPT_PATH} init"))
}

/// Command run after kubeadm on control-plane nodes, if any.
pub(super) fn post_kubeadm_command(ctx: &Ctx<'_>) -> Option<String> {
    needs_super_admin(ctx).then(|| format!("{KUBECONFIG_SCRIPT_PATH} restore"))
}

/// The files cloud-init writes on every control-plane node.
pub(super) fn files(ctx: &Ctx<'_>) -> Result<Vec<File>, RenderError> {
    let manifest = to_yaml_stream(&[to_value("Pod", &pod(ctx))?]);
    let mut files = vec![
        File {
            path: MANIFEST_PATH.to_owned(),
            owner: Some("root:root".to_owned()),
            permissions: Some("0644".to_owned()),
            content: Some(manifest),
        },
        // kube-vip resolves `kubernetes` to reach the local API server; a file of its own
        // avoids depending on the node's /etc/hosts (kube-vip/kube-vip#692).
        File {
            path: HOSTS_PATH.to_owned(),
            owner: Some("root:root".to_owned()),
            permissions: Some("0644".to_owned()),
            content: Some("127.0.0.1 localhost kubernetes\n".to_owned()),
        },
    ];
    if needs_super_admin(ctx) {
        files.push(File {
            path: KUBECONFIG_SCRIPT_PATH.to_owned(),
            owner: Some("root:root".to_owned()),
            permissions: Some("0700".to_owned()),
            content: Some(KUBECONFIG_SCRIPT.to_owned()),
        });
    }
    Ok(files)
}

fn pod(ctx: &Ctx<'_>) -> Pod {
    let endpoint = &ctx.spec.control_plane.endpoint;
    let env = [
        ("vip_arp", "true".to_owned()),
        ("port", endpoint.port.to_string()),
        // Empty: kube-vip picks the interface of the default route.
        ("vip_interface", String::new()),
        ("vip_cidr", "32".to_owned()),
        ("cp_enable", "true".to_owned()),
        ("cp_namespace", "kube-system".to_owned()),
        ("vip_leaderelection", "true".to_owned()),
        ("vip_leasename", "plndr-cp-lock".to_owned()),
        ("vip_leaseduration", "15".to_owned()),
        ("vip_renewdeadline", "10".to_owned()),
        ("vip_retryperiod", "2".to_owned()),
        ("address", endpoint.host.clone()),
    ]
    .into_iter()
    .map(|(name, value)| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    })
    .collect();
    let host_path = |name: &str, path: &str, type_: Option<&str>| Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: type_.map(str::to_owned),
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some("kube-vip".to_owned()),
            namespace: Some("kube-system".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "kube-vip".to_owned(),
                image: Some(IMAGE.to_owned()),
                image_pull_policy: Some("IfNotPresent".to_owned()),
                args: Some(vec!["manager".to_owned()]),
                env: Some(env),
                security_context: Some(SecurityContext {
                    capabilities: Some(Capabilities {
                        add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                        drop: None,
                    }),
                    ..SecurityContext::default()
                }),
                volume_mounts: Some(vec![
                    mount("kubeconfig", "/etc/kubernetes/admin.conf"),
                    mount("etchosts", "/etc/hosts"),
                ]),
                ..Container::default()
            }],
            host_network: Some(true),
            volumes: Some(vec![
                host_path("kubeconfig", "/etc/kubernetes/admin.conf", None),
                host_path("etchosts", HOSTS_PATH, Some("File")),
            ]),
            ..PodSpec::default()
        }),
        status: None,
    }
}
