//! The Cluster API objects of one workload cluster after the pivot: a cluster of 3 control-plane
//! and 3 worker machines on vSphere (CAPI v1beta2, CAPV v1beta2), with their bootstrap configs,
//! VMs and the Secrets CAPI keeps (CA, etcd, proxy and service-account keys, kubeconfig,
//! bootstrap data). 44 objects, shaped like what the controllers write, statuses included.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::ApiServer;
use serde_json::{Value, json};

/// The namespace the objects live in.
const NAMESPACE: &str = "fleet";
/// The cluster's name.
const CLUSTER: &str = "edge";
const VERSION: &str = "v1.32.4";
const CAPI: &str = "cluster.x-k8s.io";
const BOOTSTRAP: &str = "bootstrap.cluster.x-k8s.io";
const CONTROL_PLANE: &str = "controlplane.cluster.x-k8s.io";
const INFRA: &str = "infrastructure.cluster.x-k8s.io";
const NOW: &str = "2025-01-01T00:00:00Z";

fn labels(extra: &[(&str, &str)]) -> Value {
    let mut labels = json!({"cluster.x-k8s.io/cluster-name": CLUSTER});
    for (k, v) in extra {
        labels[*k] = json!(v);
    }
    labels
}

fn object(api_version: String, kind: &str, name: &str, labels: Value, spec: Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": spec,
    })
}

fn condition(kind: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": kind, "message": "", "lastTransitionTime": NOW})
}

/// Base64 of `len` bytes of stand-in content (certificates, keys, cloud-init).
fn blob(len: usize, seed: usize) -> String {
    let text: String = (0..len)
        .map(|i| char::from(b'A' + ((i * 7 + seed * 13) % 26) as u8))
        .collect();
    STANDARD.encode(text)
}

fn secret(name: &str, kind: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels(&[])},
        "type": kind,
        "data": data,
    })
}

/// The vSphere clone spec shared by templates, VSphereMachines and VSphereVMs.
fn vm_spec(cpus: u32, memory_mib: u32) -> Value {
    json!({
        "server": "vcenter.example.com",
        "thumbprint": "5D:01:06:63:55:9D:DF:FE:38:81:6E:2C:FA:71:BC:63:82:C5:16:51",
        "datacenter": "dc-edge",
        "datastore": "vsan-edge",
        "folder": "/dc-edge/vm/fledge",
        "resourcePool": "/dc-edge/host/edge-cluster/Resources/fledge",
        "template": format!("ubuntu-2404-kube-{VERSION}"),
        "cloneMode": "fullClone",
        "numCPUs": cpus,
        "memoryMiB": memory_mib,
        "diskGiB": 40,
        "os": "Linux",
        "network": {"devices": [{"networkName": "VM Network", "dhcp4": true}]},
    })
}

fn kubeadm_config_spec(control_plane: bool) -> Value {
    let node_registration = json!({
        "name": "{{ local_hostname }}",
        "criSocket": "/var/run/containerd/containerd.sock",
        "kubeletExtraArgs": [{"name": "cloud-provider", "value": "external"}],
    });
    let mut spec = json!({
        "joinConfiguration": {"nodeRegistration": node_registration},
        "preKubeadmCommands": [
            "hostnamectl set-hostname \"{{ ds.meta_data.hostname }}\"",
            "echo \"127.0.0.1 {{ ds.meta_data.hostname }} localhost\" >>/etc/hosts",
        ],
        "users": [{
            "name": "capv",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "sshAuthorizedKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhBZ0YwJ4yGkqVx8m2nB5tQ9rL3sF7dK1pW6cE0aZ4u ops@example.com"],
        }],
    });
    if control_plane {
        spec["initConfiguration"] = json!({"nodeRegistration": node_registration});
        spec["joinConfiguration"]["controlPlane"] = json!({});
        spec["clusterConfiguration"] = json!({
            "controllerManager": {"extraArgs": [{"name": "cloud-provider", "value": "external"}]},
        });
        spec["files"] = json!([{
            "path": "/etc/kubernetes/manifests/kube-vip.yaml",
            "owner": "root:root",
            "permissions": "0644",
            "content": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-vip\n  namespace: kube-system\n".repeat(20),
        }]);
    }
    spec
}

fn reference(group: &str, kind: &str, name: &str) -> Value {
    json!({"apiGroup": group, "kind": kind, "name": name})
}

/// Every object, in creation order, each with the status to write after creating it (if any).
fn objects() -> Vec<(Value, Option<Value>)> {
    let v = |group: &str| format!("{group}/v1beta2");
    let cp = format!("{CLUSTER}-control-plane");
    let md = format!("{CLUSTER}-workers");
    let ms = format!("{md}-7d9f8");
    let mut out = vec![
        (
            object(
                v(CAPI),
                "Cluster",
                CLUSTER,
                labels(&[]),
                json!({
                    "clusterNetwork": {
                        "apiServerPort": 6443,
                        "pods": {"cidrBlocks": ["192.168.0.0/16"]},
                        "services": {"cidrBlocks": ["10.96.0.0/12"]},
                    },
                    "controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443},
                    "controlPlaneRef": reference(CONTROL_PLANE, "KubeadmControlPlane", &cp),
                    "infrastructureRef": reference(INFRA, "VSphereCluster", CLUSTER),
                }),
            ),
            Some(json!({
                "phase": "Provisioned",
                "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true},
                "conditions": [condition("Available"), condition("InfrastructureReady"), condition("ControlPlaneAvailable"), condition("WorkersAvailable")],
            })),
        ),
        (
            object(
                v(INFRA),
                "VSphereCluster",
                CLUSTER,
                labels(&[]),
                json!({
                    "server": "vcenter.example.com",
                    "thumbprint": "5D:01:06:63:55:9D:DF:FE:38:81:6E:2C:FA:71:BC:63:82:C5:16:51",
                    "controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443},
                    "identityRef": {"kind": "Secret", "name": "vsphere-credentials"},
                }),
            ),
            None,
        ),
        (
            object(
                v(INFRA),
                "VSphereMachineTemplate",
                &cp,
                labels(&[]),
                json!({
                    "template": {"spec": vm_spec(4, 8192)},
                }),
            ),
            None,
        ),
        (
            object(
                v(INFRA),
                "VSphereMachineTemplate",
                &md,
                labels(&[]),
                json!({
                    "template": {"spec": vm_spec(8, 16384)},
                }),
            ),
            None,
        ),
        (
            object(
                v(CONTROL_PLANE),
                "KubeadmControlPlane",
                &cp,
                labels(&[]),
                json!({
                    "replicas": 3,
                    "version": VERSION,
                    "machineTemplate": {"spec": {"infrastructureRef": reference(INFRA, "VSphereMachineTemplate", &cp)}},
                    "kubeadmConfigSpec": kubeadm_config_spec(true),
                }),
            ),
            Some(json!({
                "replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "upToDateReplicas": 3,
                "version": VERSION,
                "selector": format!("cluster.x-k8s.io/cluster-name={CLUSTER},cluster.x-k8s.io/control-plane"),
                "initialization": {"controlPlaneInitialized": true},
                "conditions": [condition("Available"), condition("CertificatesAvailable"), condition("EtcdClusterHealthy")],
            })),
        ),
        (
            object(
                v(BOOTSTRAP),
                "KubeadmConfigTemplate",
                &md,
                labels(&[]),
                json!({
                    "template": {"spec": kubeadm_config_spec(false)},
                }),
            ),
            None,
        ),
    ];
    let machine_template = json!({
        "metadata": {"labels": labels(&[("cluster.x-k8s.io/deployment-name", &md)])},
        "spec": {
            "clusterName": CLUSTER,
            "version": VERSION,
            "bootstrap": {"configRef": reference(BOOTSTRAP, "KubeadmConfigTemplate", &md)},
            "infrastructureRef": reference(INFRA, "VSphereMachineTemplate", &md),
        },
    });
    let selector = json!({"matchLabels": labels(&[("cluster.x-k8s.io/deployment-name", &md)])});
    let replica_status = json!({
        "replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "upToDateReplicas": 3,
        "selector": format!("cluster.x-k8s.io/cluster-name={CLUSTER},cluster.x-k8s.io/deployment-name={md}"),
        "conditions": [condition("Available")],
    });
    out.push((
        object(
            v(CAPI),
            "MachineDeployment",
            &md,
            labels(&[]),
            json!({
                "clusterName": CLUSTER,
                "replicas": 3,
                "selector": selector,
                "template": machine_template,
            }),
        ),
        Some(replica_status.clone()),
    ));
    out.push((
        object(
            v(CAPI),
            "MachineSet",
            &ms,
            labels(&[("cluster.x-k8s.io/deployment-name", &md)]),
            json!({
                "clusterName": CLUSTER,
                "replicas": 3,
                "selector": selector,
                "template": machine_template,
            }),
        ),
        Some(replica_status),
    ));
    out.push((
        object(
            v(CAPI),
            "MachineHealthCheck",
            &cp,
            labels(&[]),
            json!({
                "clusterName": CLUSTER,
                "selector": {"matchLabels": labels(&[("cluster.x-k8s.io/control-plane", "")])},
                "checks": {
                    "nodeStartupTimeoutSeconds": 600,
                    "unhealthyNodeConditions": [
                        {"type": "Ready", "status": "False", "timeoutSeconds": 300},
                        {"type": "Ready", "status": "Unknown", "timeoutSeconds": 300},
                    ],
                },
            }),
        ),
        None,
    ));

    let machines = ["a1b2c", "d3e4f", "g5h6i"]
        .iter()
        .map(|s| (format!("{cp}-{s}"), true))
        .chain(
            ["j7k8l", "m9n0p", "q1r2s"]
                .iter()
                .map(|s| (format!("{ms}-{s}"), false)),
        );
    for (i, (name, control_plane)) in machines.enumerate() {
        let ip = format!("10.0.0.{}", 20 + i);
        let role = if control_plane {
            labels(&[("cluster.x-k8s.io/control-plane", "")])
        } else {
            labels(&[
                ("cluster.x-k8s.io/deployment-name", &md),
                ("cluster.x-k8s.io/set-name", &ms),
            ])
        };
        let (cpus, memory) = if control_plane { (4, 8192) } else { (8, 16384) };
        let provider_id = format!("vsphere://4203{i:04}-1c2d-3e4f-5a6b-7c8d9e0f1a2b");
        let mut vm = vm_spec(cpus, memory);
        vm["providerID"] = json!(provider_id);
        out.push((
            object(v(CAPI), "Machine", &name, role.clone(), json!({
                "clusterName": CLUSTER,
                "version": VERSION,
                "providerID": provider_id,
                "bootstrap": {
                    "configRef": reference(BOOTSTRAP, "KubeadmConfig", &name),
                    "dataSecretName": name,
                },
                "infrastructureRef": reference(INFRA, "VSphereMachine", &name),
            })),
            Some(json!({
                "phase": "Running",
                "nodeRef": {"name": name},
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                "initialization": {"infrastructureProvisioned": true, "bootstrapDataSecretCreated": true},
                "nodeInfo": {
                    "architecture": "amd64", "bootID": "b0f1e2d3", "containerRuntimeVersion": "containerd://1.7.24",
                    "kernelVersion": "6.8.0-51-generic", "kubeProxyVersion": VERSION, "kubeletVersion": VERSION,
                    "machineID": "4203", "operatingSystem": "linux", "osImage": "Ubuntu 24.04.1 LTS", "systemUUID": "4203",
                },
                "conditions": [condition("Available"), condition("Ready"), condition("BootstrapConfigReady"), condition("InfrastructureReady"), condition("NodeHealthy")],
            })),
        ));
        out.push((
            object(v(INFRA), "VSphereMachine", &name, role.clone(), vm.clone()),
            Some(json!({
                "addresses": [{"type": "InternalIP", "address": ip}],
                "initialization": {"provisioned": true},
                "conditions": [condition("Ready"), condition("VirtualMachineProvisioned")],
            })),
        ));
        let mut vm = vm_spec(cpus, memory);
        vm["biosUUID"] = json!(format!("4203{i:04}-1c2d-3e4f-5a6b-7c8d9e0f1a2b"));
        vm["bootstrapRef"] =
            json!({"apiVersion": "v1", "kind": "Secret", "name": name, "namespace": NAMESPACE});
        out.push((
            object(v(INFRA), "VSphereVM", &name, role.clone(), vm),
            Some(json!({
                "ready": true,
                "addresses": [ip],
                "vmRef": format!("vm-{}", 1000 + i),
                "network": [{"connected": true, "ipAddrs": [ip], "macAddr": format!("00:50:56:00:00:{i:02x}"), "networkName": "VM Network"}],
                "conditions": [condition("Ready")],
            })),
        ));
        out.push((
            object(
                v(BOOTSTRAP),
                "KubeadmConfig",
                &name,
                role,
                kubeadm_config_spec(control_plane),
            ),
            Some(json!({
                "dataSecretName": name,
                "initialization": {"dataSecretCreated": true},
                "conditions": [condition("Ready"), condition("DataSecretAvailable")],
            })),
        ));
        out.push((
            secret(
                &name,
                "cluster.x-k8s.io/secret",
                json!({"format": STANDARD.encode("cloud-config"), "value": blob(6000, i)}),
            ),
            None,
        ));
    }
    for (i, suffix) in ["ca", "etcd", "proxy", "sa"].iter().enumerate() {
        out.push((
            secret(
                &format!("{CLUSTER}-{suffix}"),
                "cluster.x-k8s.io/secret",
                json!({
                    "tls.crt": blob(1100, 10 + i),
                    "tls.key": blob(1700, 20 + i),
                }),
            ),
            None,
        ));
    }
    out.push((
        secret(
            &format!("{CLUSTER}-kubeconfig"),
            "cluster.x-k8s.io/secret",
            json!({"value": blob(5500, 30)}),
        ),
        None,
    ));
    out
}

/// Creates the namespace and every object (then its status) in `api`; returns the number of
/// objects.
pub fn load(api: &Arc<ApiServer>) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    api.create_object(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )?;
    let objects = objects();
    let count = objects.len();
    for (object, status) in objects {
        let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
        let mut created = api
            .create_object(object)
            .with_context(|| format!("creating {what}"))?;
        if let Some(status) = status {
            created["status"] = status;
            api.update_object_status(created)
                .with_context(|| format!("writing the status of {what}"))?;
        }
    }
    Ok(count)
}
