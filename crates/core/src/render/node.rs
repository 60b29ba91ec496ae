//! Bootstrap settings every node shares, control plane and workers alike.

use super::Ctx;
use crate::capi::{Arg, NodeRegistrationOptions, NodeTaint, User};

/// Operating-system user that gets the spec's SSH keys, as in CAPV's templates.
pub(super) const SSH_USER: &str = "capv";
const CRI_SOCKET: &str = "/var/run/containerd/containerd.sock";

/// How a node registers: named after its VM, on containerd, with the cloud provider
/// external (the vSphere CPI sets the provider ID Cluster API matches nodes by), plus
/// `extra_args` and, when given, `taints`.
pub(super) fn node_registration(
    extra_args: Vec<Arg>,
    taints: Option<Vec<NodeTaint>>,
) -> NodeRegistrationOptions {
    let mut kubelet_extra_args = vec![arg("cloud-provider", "external")];
    kubelet_extra_args.extend(extra_args);
    NodeRegistrationOptions {
        name: Some("{{ local_hostname }}".to_owned()),
        cri_socket: Some(CRI_SOCKET.to_owned()),
        kubelet_extra_args,
        taints,
    }
}

/// Commands that give the VM the hostname vSphere's metadata assigns it before kubeadm
/// registers the node under it.
pub(super) fn hostname_commands() -> Vec<String> {
    vec![
        r#"hostnamectl set-hostname "{{ ds.meta_data.hostname }}""#.to_owned(),
        r#"echo "::1         ipv6-localhost ipv6-loopback localhost6 localhost6.localdomain6" >/etc/hosts"#
            .to_owned(),
        r#"echo "127.0.0.1   {{ ds.meta_data.hostname }} {{ local_hostname }} localhost localhost.localdomain localhost4 localhost4.localdomain4" >>/etc/hosts"#
            .to_owned(),
    ]
}

/// The SSH user, when the spec has keys.
pub(super) fn users(ctx: &Ctx<'_>) -> Vec<User> {
    if ctx.spec.ssh_authorized_keys.is_empty() {
        return Vec::new();
    }
    vec![User {
        name: SSH_USER.to_owned(),
        sudo: Some("ALL=(ALL) NOPASSWD:ALL".to_owned()),
        ssh_authorized_keys: ctx.spec.ssh_authorized_keys.clone(),
    }]
}

pub(super) fn arg(name: &str, value: &str) -> Arg {
    Arg {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}
