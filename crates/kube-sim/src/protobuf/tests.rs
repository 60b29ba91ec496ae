use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::json;

use super::*;

/// Wraps an encoded object in the envelope kubectl sends.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = runtime::Unknown {
        type_meta: Some(runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protobuf")
}

/// Every body kubectl 1.32 sent for `kubectl create …` (captured from a loopback server)
/// decodes to what `kubectl create … --dry-run=client -o json` prints (minus the
/// `creationTimestamp: null` we deliberately leave out).
#[test]
fn kubectl_fixtures_decode_to_the_json_kubectl_would_send() {
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for pb in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pb"))
    {
        let body = std::fs::read(pb).unwrap();
        let expected: Value =
            serde_json::from_slice(&std::fs::read(pb.with_extension("json")).unwrap()).unwrap();
        let actual = decode_to_json(&body).unwrap_or_else(|e| panic!("{}: {e}", pb.display()));
        assert_eq!(
            actual,
            expected,
            "{}:\nactual:   {}\nexpected: {}",
            pb.display(),
            serde_json::to_string(&actual).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures found");
}

#[test]
fn kubectl_fixtures_deserialize_into_k8s_openapi_types() {
    use k8s_openapi::api::{
        apps::v1::Deployment, authentication::v1::TokenRequest, core::v1::Secret,
    };
    let read =
        |name: &str| decode_to_json(&std::fs::read(fixtures_dir().join(name)).unwrap()).unwrap();

    let secret: Secret = serde_json::from_value(read("secret_generic.pb")).unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["a"].0, b"b");
    assert_eq!(data["key2"].0, b"multi line\nvalue");
    assert_eq!(secret.metadata.namespace.as_deref(), Some("default"));

    let deployment: Deployment = serde_json::from_value(read("deployment_zero.pb")).unwrap();
    let spec = deployment.spec;
    assert_eq!(
        spec.replicas,
        Some(0),
        "an explicit replicas: 0 must survive"
    );
    assert_eq!(
        spec.template.spec.unwrap().containers[0].command.as_deref(),
        Some(&["sleep".to_string(), "3600".to_string()][..])
    );

    let token: TokenRequest = serde_json::from_value(read("token.pb")).unwrap();
    let spec = token.spec.unwrap();
    assert_eq!(spec.audiences, Some(vec!["https://example".to_string()]));
    assert_eq!(spec.expiration_seconds, Some(3600));
}

#[test]
fn pod_round_trip_covers_special_and_embedded_types() {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("p"),
            namespace: s("ns"),
            generate_name: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            deletion_grace_period_seconds: Some(0),
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            owner_references: vec![meta::OwnerReference {
                api_version: s("apps/v1"),
                kind: s("ReplicaSet"),
                name: s("rs"),
                uid: s("u1"),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }],
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Apply"),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:metadata":{"f:labels":{".":{}}}}"#.to_vec()),
                }),
                time: Some(meta::Time {
                    seconds: Some(0),
                    nanos: Some(0),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            restart_policy: s(""),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(0),
            host_network: Some(false),
            containers: vec![core::Container {
                name: s("c"),
                image: s("nginx"),
                stdin: Some(false),
                resources: Some(core::ResourceRequirements {
                    limits: BTreeMap::from([(
                        "memory".to_string(),
                        Quantity { string: s("128Mi") },
                    )]),
                    requests: BTreeMap::from([("cpu".to_string(), Quantity { string: s("100m") })]),
                    ..Default::default()
                }),
                ports: vec![core::ContainerPort {
                    container_port: Some(8080),
                    protocol: s("TCP"),
                    ..Default::default()
                }],
                env: vec![core::EnvVar {
                    name: s("PASSWORD"),
                    value: s(""),
                    value_from: Some(core::EnvVarSource {
                        secret_key_ref: Some(core::SecretKeySelector {
                            local_object_reference: Some(core::LocalObjectReference {
                                name: s("creds"),
                            }),
                            key: s("password"),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                }],
                liveness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: s("/healthz"),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: Some(0),
                                str_val: s("http"),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(10),
                    timeout_seconds: Some(0),
                    ..Default::default()
                }),
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        tcp_socket: Some(core::TcpSocketAction {
                            port: Some(IntOrString {
                                r#type: Some(0),
                                int_val: Some(8080),
                                str_val: s(""),
                            }),
                            host: s(""),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                security_context: Some(core::SecurityContext {
                    run_as_user: Some(0),
                    privileged: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: s("data"),
                volume_source: Some(core::VolumeSource {
                    secret: Some(core::SecretVolumeSource {
                        secret_name: s("creds"),
                        default_mode: Some(0o400),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            tolerations: vec![core::Toleration {
                key: s("node.kubernetes.io/not-ready"),
                operator: s("Exists"),
                effect: s("NoExecute"),
                toleration_seconds: Some(300),
                value: s(""),
            }],
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: s("Running"),
            start_time: Some(meta::Time {
                seconds: Some(1_700_000_001),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
    };
    let json = decode_to_json(&envelope("v1", "Pod", pod.encode_to_vec())).unwrap();
    assert_eq!(
        json,
        json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "creationTimestamp": "2023-11-14T22:13:20Z",
                "deletionGracePeriodSeconds": 0,
                "labels": {"app": "web"},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1",
                    "controller": true, "blockOwnerDeletion": false
                }],
                "managedFields": [{
                    "manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}
                }]
            },
            "spec": {
                "volumes": [{"name": "data", "secret": {"secretName": "creds", "defaultMode": 256}}],
                "containers": [{
                    "name": "c",
                    "image": "nginx",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password", "optional": false}}}],
                    "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                    "readinessProbe": {"tcpSocket": {"port": 8080}},
                    "securityContext": {"privileged": false, "runAsUser": 0}
                }],
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": false,
                "tolerations": [{
                    "key": "node.kubernetes.io/not-ready", "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 300
                }]
            },
            "status": {"phase": "Running", "startTime": "2023-11-14T22:13:21Z"}
        })
    );
    // And the result is a valid Pod for serde-based clients.
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json).unwrap();
    assert_eq!(
        typed.spec.unwrap().containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()["memory"]
            .0,
        "128Mi"
    );
}

#[test]
fn micro_time_bytes_raw_extension_and_delete_options() {
    // events.k8s.io/v1 Event: MicroTime keeps microseconds.
    let event = k8s_pb::api::events::v1::Event {
        metadata: Some(meta::ObjectMeta {
            name: s("e"),
            ..Default::default()
        }),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(123_456_000),
        }),
        reason: s("Started"),
        ..Default::default()
    };
    let json = decode_to_json(&envelope(
        "events.k8s.io/v1",
        "Event",
        event.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(json["eventTime"], "2023-11-14T22:13:20.123456Z");
    assert_eq!(json["reason"], "Started");

    // ConfigMap binaryData is base64, data is plain.
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta::default()),
        data: BTreeMap::from([("k".to_string(), "v".to_string())]),
        binary_data: BTreeMap::from([("b".to_string(), vec![0, 255, 1])]),
        immutable: Some(false),
    };
    let json = decode_to_json(&envelope("v1", "ConfigMap", cm.encode_to_vec())).unwrap();
    assert_eq!(
        json,
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {}, "immutable": false, "data": {"k": "v"}, "binaryData": {"b": "AP8B"}})
    );

    // ControllerRevision.data is a RawExtension holding JSON.
    let revision = k8s_pb::api::apps::v1::ControllerRevision {
        metadata: Some(meta::ObjectMeta::default()),
        data: Some(runtime::RawExtension {
            raw: Some(br#"{"spec":{"x":1}}"#.to_vec()),
        }),
        revision: Some(2),
    };
    let json = decode_to_json(&envelope(
        "apps/v1",
        "ControllerRevision",
        revision.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(json["data"], json!({"spec": {"x": 1}}));
    assert_eq!(json["revision"], 2);

    // DeleteOptions are accepted under any group version; a zero grace period is kept.
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        propagation_policy: s("Foreground"),
        preconditions: Some(meta::Preconditions {
            uid: s("u1"),
            resource_version: None,
        }),
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    let json = decode_to_json(&envelope(
        "apps/v1",
        "DeleteOptions",
        options.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(
        json,
        json!({
            "kind": "DeleteOptions", "apiVersion": "apps/v1", "gracePeriodSeconds": 0,
            "preconditions": {"uid": "u1"}, "propagationPolicy": "Foreground", "dryRun": ["All"]
        })
    );
}

#[test]
fn scale_lease_and_rbac_round_trip() {
    let scale = k8s_pb::api::autoscaling::v1::Scale {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::autoscaling::v1::ScaleSpec { replicas: Some(5) }),
        status: None,
    };
    let json = decode_to_json(&envelope("autoscaling/v1", "Scale", scale.encode_to_vec())).unwrap();
    assert_eq!(
        json,
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web"}, "spec": {"replicas": 5}})
    );

    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: Some(meta::ObjectMeta {
            name: s("leader"),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            holder_identity: s("me"),
            lease_duration_seconds: Some(15),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1),
                nanos: Some(0),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let json = decode_to_json(&envelope(
        "coordination.k8s.io/v1",
        "Lease",
        lease.encode_to_vec(),
    ))
    .unwrap();
    assert_eq!(
        json["spec"],
        json!({"holderIdentity": "me", "leaseDurationSeconds": 15, "renewTime": "1970-01-01T00:00:01.000000Z", "leaseTransitions": 0})
    );
}

#[test]
fn node_and_core_event_round_trip() {
    let node = core::Node {
        metadata: Some(meta::ObjectMeta {
            name: s("worker-1"),
            ..Default::default()
        }),
        spec: Some(core::NodeSpec {
            pod_cidr: s("10.0.1.0/24"),
            unschedulable: Some(false),
            taints: vec![core::Taint {
                key: s("node.kubernetes.io/not-ready"),
                value: s(""),
                effect: s("NoSchedule"),
                time_added: None,
            }],
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            capacity: BTreeMap::from([
                ("cpu".to_string(), Quantity { string: s("4") }),
                ("memory".to_string(), Quantity { string: s("8Gi") }),
            ]),
            conditions: vec![core::NodeCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_heartbeat_time: Some(meta::Time {
                    seconds: Some(1_700_000_000),
                    nanos: Some(0),
                }),
                reason: s(""),
                ..Default::default()
            }],
            addresses: vec![core::NodeAddress {
                r#type: s("InternalIP"),
                address: s("10.0.0.5"),
            }],
            daemon_endpoints: Some(core::NodeDaemonEndpoints {
                kubelet_endpoint: Some(core::DaemonEndpoint { port: Some(10250) }),
            }),
            ..Default::default()
        }),
    };
    let json = decode_to_json(&envelope("v1", "Node", node.encode_to_vec())).unwrap();
    assert_eq!(
        json,
        json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": "worker-1"},
            "spec": {"podCIDR": "10.0.1.0/24", "taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "4", "memory": "8Gi"},
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2023-11-14T22:13:20Z"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}
            }
        })
    );

    let event = core::Event {
        metadata: Some(meta::ObjectMeta {
            name: s("p.123"),
            namespace: s("default"),
            ..Default::default()
        }),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            name: s("p"),
            namespace: s("default"),
            uid: s("u1"),
            ..Default::default()
        }),
        reason: s("Scheduled"),
        message: s("assigned"),
        source: Some(core::EventSource {
            component: s("scheduler"),
            host: s(""),
        }),
        first_timestamp: Some(meta::Time {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        }),
        count: Some(1),
        r#type: s("Normal"),
        reporting_component: s(""),
        reporting_instance: s(""),
        ..Default::default()
    };
    let json = decode_to_json(&envelope("v1", "Event", event.encode_to_vec())).unwrap();
    assert_eq!(
        json,
        json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": "p.123", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "uid": "u1"},
            "reason": "Scheduled", "message": "assigned",
            "source": {"component": "scheduler"},
            "firstTimestamp": "2023-11-14T22:13:20Z",
            "count": 1, "type": "Normal",
            // Go writes these two even when empty (no omitempty in the struct tags).
            "reportingComponent": "", "reportingInstance": ""
        })
    );
}

#[test]
fn envelope_errors() {
    assert_eq!(
        decode_to_json(b"{\"kind\":\"Secret\"}"),
        Err(ProtobufError::MissingMagic)
    );
    assert_eq!(decode_to_json(b""), Err(ProtobufError::MissingMagic));
    assert_eq!(decode_to_json(MAGIC), Err(ProtobufError::MissingKind));
    assert_eq!(
        decode_to_json(&envelope("example.com/v1", "Widget", Vec::new())),
        Err(ProtobufError::UnsupportedKind {
            api_version: "example.com/v1".into(),
            kind: "Widget".into()
        })
    );
    let mut gzip = MAGIC.to_vec();
    gzip.extend(
        runtime::Unknown {
            type_meta: Some(runtime::TypeMeta {
                api_version: s("v1"),
                kind: s("Secret"),
            }),
            raw: Some(Vec::new()),
            content_encoding: s("gzip"),
            content_type: None,
        }
        .encode_to_vec(),
    );
    assert_eq!(
        decode_to_json(&gzip),
        Err(ProtobufError::UnsupportedEncoding("gzip".into()))
    );
    // A string field sent as a varint is rejected, not misread.
    let wrong_wire = envelope("v1", "Namespace", vec![0x0a, 0x02, 0x08, 0x01]);
    assert!(matches!(
        decode_to_json(&wrong_wire),
        Err(ProtobufError::Malformed(_))
    ));
    // Truncated object.
    let secret = std::fs::read(fixtures_dir().join("secret_generic.pb")).unwrap();
    assert!(decode_to_json(&secret[..secret.len() - 3]).is_err());
}

#[test]
fn supported_kinds() {
    for (api_version, kind) in [
        ("v1", "Namespace"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "ServiceAccount"),
        ("v1", "Service"),
        ("v1", "Pod"),
        ("v1", "Node"),
        ("v1", "Event"),
        ("events.k8s.io/v1", "Event"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "ReplicaSet"),
        ("coordination.k8s.io/v1", "Lease"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("v1", "DeleteOptions"),
        ("meta.k8s.io/v1", "DeleteOptions"),
        ("autoscaling/v1", "Scale"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("networking.k8s.io/v1", "Ingress"),
    ] {
        assert!(is_supported(api_version, kind), "{api_version} {kind}");
    }
    assert!(!is_supported("apps/v1", "Secret"));
    assert!(!is_supported("cluster.x-k8s.io/v1beta2", "Cluster"));
}

/// The generated table is self-consistent: indices in range, unique tags and JSON names.
#[test]
fn schema_table_is_consistent() {
    for (i, msg) in schema::MESSAGES.iter().enumerate() {
        let mut tags = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for field in msg.fields {
            assert!(
                tags.insert(field.tag),
                "{} #{i}: duplicate tag {}",
                msg.name,
                field.tag
            );
            assert!(
                names.insert(field.json),
                "{}: duplicate json name {}",
                msg.name,
                field.json
            );
            if let Kind::M(index) = field.kind {
                assert!(
                    usize::from(index) < schema::MESSAGES.len(),
                    "{}.{}",
                    msg.name,
                    field.json
                );
            }
            assert!(field.shape != Shape::Inline || matches!(field.kind, Kind::M(_)));
        }
    }
    for (api_version, kind, index) in schema::ROOTS {
        let name = schema::MESSAGES[*index].name;
        assert!(
            name.ends_with(&format!(".{kind}")),
            "{api_version} {kind} -> {name}"
        );
    }
}

/// Garbage never panics: random bytes, random bytes behind the magic, and mutated real bodies.
#[test]
fn fuzz_random_and_mutated_input_never_panics() {
    // Small deterministic xorshift generator: reproducible without a dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pb"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(!seeds.is_empty());
    let mut ok = 0;
    for round in 0..20_000 {
        let body: Vec<u8> = match round % 3 {
            0 => (0..next() % 64).map(|_| next() as u8).collect(),
            1 => {
                let mut body = MAGIC.to_vec();
                body.extend((0..next() % 128).map(|_| next() as u8));
                body
            }
            _ => {
                let mut body = seeds[next() as usize % seeds.len()].clone();
                for _ in 0..1 + next() % 4 {
                    if body.len() <= 4 {
                        break;
                    }
                    let at = 4 + next() as usize % (body.len() - 4);
                    match next() % 3 {
                        0 => body[at] ^= 1 << (next() % 8),
                        1 => body[at] = next() as u8,
                        _ => body.truncate(at),
                    }
                }
                body
            }
        };
        if decode_to_json(&body).is_ok() {
            ok += 1;
        }
    }
    // Some single-bit flips only change a string's content: those must still decode.
    assert!(ok > 0);
    // Deep nesting is refused instead of overflowing the stack: RawExtension bodies nested 200 deep.
    let mut body = envelope("apps/v1", "ControllerRevision", Vec::new());
    for _ in 0..200 {
        let revision = k8s_pb::api::apps::v1::ControllerRevision {
            data: Some(runtime::RawExtension { raw: Some(body) }),
            ..Default::default()
        };
        body = envelope("apps/v1", "ControllerRevision", revision.encode_to_vec());
    }
    assert_eq!(decode_to_json(&body), Err(ProtobufError::TooDeep));
}
