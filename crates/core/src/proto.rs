//! The gRPC API types generated from `proto/fledge/v1`, and their conversions to and from
//! the spec types.
//!
//! **Boundary:** only the manager's `api` module and the agent's `stream` module touch these
//! types; everything else works with [`crate::spec`]. Conversions from the wire are lossless
//! and never validate: validation runs on the spec types afterwards, so that a gRPC caller and a
//! `kubectl apply` of the same object get the same errors with the same field paths.

#![allow(missing_docs, clippy::doc_markdown)]

use std::collections::BTreeMap;

use prost_types::{ListValue, Struct, value::Kind};

use crate::spec;

/// Generated code of package `fledge.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("fledge.v1");
}

/// Encoded `FileDescriptorSet` of the Fledge API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fledge_descriptor");

/// Converts a JSON value into a protobuf `Value`.
pub fn json_to_value(value: &serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Converts a JSON object into a protobuf `Struct`.
pub fn json_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// Converts a protobuf `Value` into JSON. Whole numbers come back as integers, because
/// Kubernetes objects (ports, replicas) must not turn into `80.0`.
pub fn value_to_json(value: &prost_types::Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// Converts a protobuf `Struct` into a JSON object (keys sorted, for deterministic output).
pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    let sorted: BTreeMap<&String, &prost_types::Value> = s.fields.iter().collect();
    serde_json::Value::Object(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn number_to_json(n: f64) -> serde_json::Value {
    // 2^53: every integer below it is exact in an f64.
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() < MAX_EXACT {
        #[allow(clippy::cast_possible_truncation)]
        let i = n as i64;
        serde_json::Value::from(i)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

// === impl ClusterSpec ===

impl From<v1::ClusterSpec> for spec::WorkloadClusterSpec {
    fn from(p: v1::ClusterSpec) -> Self {
        let vsphere = p.infrastructure.and_then(|i| match i.provider {
            Some(v1::infrastructure::Provider::Vsphere(v)) => Some(spec::VSphereInfrastructure {
                server: v.server,
                thumbprint: non_empty(&v.thumbprint),
                datacenter: v.datacenter,
                datastore: v.datastore,
                network: v.network,
                resource_pool: non_empty(&v.resource_pool),
                folder: non_empty(&v.folder),
                template: v.template,
                credentials_secret: v.credentials_secret,
            }),
            None => None,
        });
        let cp = p.control_plane.unwrap_or_default();
        let endpoint = cp.endpoint.unwrap_or_default();
        let network = p.network.unwrap_or_default();
        spec::WorkloadClusterSpec {
            kubernetes_version: p.kubernetes_version,
            infrastructure: spec::Infrastructure { vsphere },
            control_plane: spec::ControlPlaneSpec {
                replicas: cp.replicas,
                endpoint: spec::Endpoint {
                    host: endpoint.host,
                    port: endpoint.port,
                },
                machine: cp.machine.unwrap_or_default().into(),
                template: non_empty(&cp.template),
            },
            workers: p.workers.into_iter().map(Into::into).collect(),
            network: spec::NetworkSpec {
                pods: network.pods,
                services: network.services,
                service_domain: non_empty(&network.service_domain),
            },
            profile: non_empty(&p.profile),
            ssh_authorized_keys: p.ssh_authorized_keys,
            certificates: p.certificates.map(|c| spec::CertificatesSpec {
                renew_before_expiry_days: c.renew_before_expiry_days,
                rotate_after: non_empty(&c.rotate_after),
            }),
        }
    }
}

impl From<&spec::WorkloadClusterSpec> for v1::ClusterSpec {
    fn from(s: &spec::WorkloadClusterSpec) -> Self {
        v1::ClusterSpec {
            kubernetes_version: s.kubernetes_version.clone(),
            infrastructure: Some(v1::Infrastructure {
                provider: s.infrastructure.vsphere.as_ref().map(|v| {
                    v1::infrastructure::Provider::Vsphere(v1::VSphere {
                        server: v.server.clone(),
                        thumbprint: v.thumbprint.clone().unwrap_or_default(),
                        datacenter: v.datacenter.clone(),
                        datastore: v.datastore.clone(),
                        network: v.network.clone(),
                        resource_pool: v.resource_pool.clone().unwrap_or_default(),
                        folder: v.folder.clone().unwrap_or_default(),
                        template: v.template.clone(),
                        credentials_secret: v.credentials_secret.clone(),
                    })
                }),
            }),
            control_plane: Some(v1::ControlPlane {
                replicas: s.control_plane.replicas,
                endpoint: Some(v1::Endpoint {
                    host: s.control_plane.endpoint.host.clone(),
                    port: s.control_plane.endpoint.port,
                }),
                machine: Some((&s.control_plane.machine).into()),
                template: s.control_plane.template.clone().unwrap_or_default(),
            }),
            workers: s.workers.iter().map(Into::into).collect(),
            network: Some(v1::Network {
                pods: s.network.pods.clone(),
                services: s.network.services.clone(),
                service_domain: s.network.service_domain.clone().unwrap_or_default(),
            }),
            profile: s.profile.clone().unwrap_or_default(),
            ssh_authorized_keys: s.ssh_authorized_keys.clone(),
            certificates: s.certificates.as_ref().map(|c| v1::Certificates {
                renew_before_expiry_days: c.renew_before_expiry_days,
                rotate_after: c.rotate_after.clone().unwrap_or_default(),
            }),
        }
    }
}

impl From<v1::MachineShape> for spec::MachineShape {
    fn from(m: v1::MachineShape) -> Self {
        spec::MachineShape {
            cpus: m.cpus,
            memory_mib: m.memory_mib,
            disk_gib: m.disk_gib,
        }
    }
}

impl From<&spec::MachineShape> for v1::MachineShape {
    fn from(m: &spec::MachineShape) -> Self {
        v1::MachineShape {
            cpus: m.cpus,
            memory_mib: m.memory_mib,
            disk_gib: m.disk_gib,
        }
    }
}

impl From<v1::WorkerPool> for spec::WorkerPool {
    fn from(w: v1::WorkerPool) -> Self {
        spec::WorkerPool {
            name: w.name,
            replicas: w.replicas,
            machine: w.machine.unwrap_or_default().into(),
            template: non_empty(&w.template),
            labels: w.labels.into_iter().collect(),
            taints: w
                .taints
                .into_iter()
                .map(|t| spec::Taint {
                    key: t.key,
                    value: non_empty(&t.value),
                    effect: taint_effect_from_str(&t.effect),
                })
                .collect(),
            autoscaling: w.autoscaling.map(|a| spec::Autoscaling {
                min_replicas: a.min_replicas,
                max_replicas: a.max_replicas,
            }),
        }
    }
}

impl From<&spec::WorkerPool> for v1::WorkerPool {
    fn from(w: &spec::WorkerPool) -> Self {
        v1::WorkerPool {
            name: w.name.clone(),
            replicas: w.replicas,
            machine: Some((&w.machine).into()),
            template: w.template.clone().unwrap_or_default(),
            labels: w.labels.clone().into_iter().collect(),
            taints: w
                .taints
                .iter()
                .map(|t| v1::Taint {
                    key: t.key.clone(),
                    value: t.value.clone().unwrap_or_default(),
                    effect: taint_effect_str(t.effect).to_owned(),
                })
                .collect(),
            autoscaling: w.autoscaling.as_ref().map(|a| v1::Autoscaling {
                min_replicas: a.min_replicas,
                max_replicas: a.max_replicas,
            }),
        }
    }
}

/// The wire name of a taint effect.
pub fn taint_effect_str(effect: spec::TaintEffect) -> &'static str {
    match effect {
        spec::TaintEffect::NoSchedule => "NoSchedule",
        spec::TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        spec::TaintEffect::NoExecute => "NoExecute",
    }
}

/// Parses a taint effect; anything unknown becomes `NoSchedule`, the strictest effect that
/// still lets the cluster work. Callers that need to reject unknown effects check
/// [`parse_taint_effect`] first.
fn taint_effect_from_str(effect: &str) -> spec::TaintEffect {
    parse_taint_effect(effect).unwrap_or(spec::TaintEffect::NoSchedule)
}

/// Parses a taint effect by its Kubernetes name.
pub fn parse_taint_effect(effect: &str) -> Option<spec::TaintEffect> {
    match effect {
        "NoSchedule" => Some(spec::TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(spec::TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(spec::TaintEffect::NoExecute),
        _ => None,
    }
}

// === impl ProfileSpec ===

impl From<v1::ProfileSpec> for spec::ClusterProfileSpec {
    fn from(p: v1::ProfileSpec) -> Self {
        spec::ClusterProfileSpec {
            addons: p
                .addons
                .into_iter()
                .map(|a| spec::Addon {
                    name: a.name,
                    order: a.order,
                    depends_on: a.depends_on,
                    manifests: (!a.manifests.is_empty())
                        .then(|| a.manifests.iter().map(struct_to_json).collect()),
                    helm: a.helm.map(|h| spec::HelmChart {
                        repository: h.repository,
                        chart: h.chart,
                        version: h.version,
                        namespace: non_empty(&h.namespace),
                        release_name: non_empty(&h.release_name),
                        values: h.values.as_ref().map(struct_to_json),
                    }),
                    health: a.health.map(|g| spec::HealthGate {
                        deployments_available: g.deployments_available,
                        helm_release_ready: g.helm_release_ready,
                        timeout_seconds: g.timeout_seconds,
                    }),
                })
                .collect(),
        }
    }
}

impl From<&spec::ClusterProfileSpec> for v1::ProfileSpec {
    fn from(p: &spec::ClusterProfileSpec) -> Self {
        v1::ProfileSpec {
            addons: p
                .addons
                .iter()
                .map(|a| v1::Addon {
                    name: a.name.clone(),
                    order: a.order,
                    depends_on: a.depends_on.clone(),
                    manifests: a
                        .manifests
                        .iter()
                        .flatten()
                        .map(|m| match m {
                            serde_json::Value::Object(map) => json_to_struct(map),
                            // Not an object: validation rejects it; keep it visible as a
                            // wrapped value rather than dropping it silently.
                            other => json_to_struct(&serde_json::Map::from_iter([(
                                "value".to_owned(),
                                other.clone(),
                            )])),
                        })
                        .collect(),
                    helm: a.helm.as_ref().map(|h| v1::HelmChart {
                        repository: h.repository.clone(),
                        chart: h.chart.clone(),
                        version: h.version.clone(),
                        namespace: h.namespace.clone().unwrap_or_default(),
                        release_name: h.release_name.clone().unwrap_or_default(),
                        values: h
                            .values
                            .as_ref()
                            .and_then(|v| v.as_object())
                            .map(json_to_struct),
                    }),
                    health: a.health.as_ref().map(|g| v1::HealthGate {
                        deployments_available: g.deployments_available,
                        helm_release_ready: g.helm_release_ready,
                        timeout_seconds: g.timeout_seconds,
                    }),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_round_trip_keeps_integers_and_nesting() {
        let json = serde_json::json!({"a": 1, "b": [true, null, "x", 2.5], "c": {"d": 80}});
        let back = struct_to_json(&json_to_struct(json.as_object().unwrap()));
        assert_eq!(back, json);
        assert!(back["a"].is_i64(), "integers must stay integers: {back}");
    }

    #[test]
    fn cluster_spec_round_trips_through_the_wire_type() {
        let spec = spec::WorkloadClusterSpec {
            kubernetes_version: "v1.32.4".into(),
            infrastructure: spec::Infrastructure {
                vsphere: Some(spec::VSphereInfrastructure {
                    server: "vc".into(),
                    thumbprint: Some("AA".into()),
                    datacenter: "dc".into(),
                    datastore: "ds".into(),
                    network: "net".into(),
                    resource_pool: None,
                    folder: Some("f".into()),
                    template: "t".into(),
                    credentials_secret: "creds".into(),
                }),
            },
            control_plane: spec::ControlPlaneSpec {
                replicas: 3,
                endpoint: spec::Endpoint {
                    host: "10.0.0.10".into(),
                    port: 6443,
                },
                machine: spec::MachineShape {
                    cpus: 4,
                    memory_mib: 8192,
                    disk_gib: 40,
                },
                template: None,
            },
            workers: vec![spec::WorkerPool {
                name: "general".into(),
                replicas: Some(3),
                machine: spec::MachineShape {
                    cpus: 4,
                    memory_mib: 16384,
                    disk_gib: 80,
                },
                template: Some("os2".into()),
                labels: BTreeMap::from([("tier".into(), "general".into())]),
                taints: vec![spec::Taint {
                    key: "gpu".into(),
                    value: None,
                    effect: spec::TaintEffect::NoExecute,
                }],
                autoscaling: Some(spec::Autoscaling {
                    min_replicas: 1,
                    max_replicas: 5,
                }),
            }],
            network: spec::NetworkSpec {
                pods: "192.168.0.0/16".into(),
                services: "10.96.0.0/12".into(),
                service_domain: None,
            },
            profile: Some("standard".into()),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA".into()],
            certificates: Some(spec::CertificatesSpec {
                renew_before_expiry_days: Some(20),
                rotate_after: None,
            }),
        };
        let wire = v1::ClusterSpec::from(&spec);
        assert_eq!(spec::WorkloadClusterSpec::from(wire), spec);
    }

    #[test]
    fn profile_spec_round_trips_through_the_wire_type() {
        let profile = spec::ClusterProfileSpec {
            addons: vec![
                spec::Addon {
                    name: "cni".into(),
                    order: 10,
                    depends_on: vec![],
                    manifests: Some(vec![serde_json::json!({
                        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cni"}
                    })]),
                    helm: None,
                    health: Some(spec::HealthGate {
                        deployments_available: true,
                        helm_release_ready: false,
                        timeout_seconds: Some(300),
                    }),
                },
                spec::Addon {
                    name: "monitoring".into(),
                    order: 20,
                    depends_on: vec!["cni".into()],
                    manifests: None,
                    helm: Some(spec::HelmChart {
                        repository: "https://charts.example.com".into(),
                        chart: "kps".into(),
                        version: "65.1.0".into(),
                        namespace: Some("monitoring".into()),
                        release_name: None,
                        values: Some(serde_json::json!({"grafana": {"enabled": false}})),
                    }),
                    health: None,
                },
            ],
        };
        let wire = v1::ProfileSpec::from(&profile);
        assert_eq!(spec::ClusterProfileSpec::from(wire), profile);
    }
}
