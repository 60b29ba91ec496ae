use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::patch::{ListKeys, ListType};

/// The upstream CRDs, read at test time (never copied into the project).
fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/crds")
}

/// The `openAPIV3Schema` of `version` in the CRD file `rel` (relative to the CRD dir).
fn crd_schema(rel: &str, version: &str) -> Value {
    let path = crds_dir().join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let crd: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == version)
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .unwrap_or_else(|| panic!("{rel} has no version {version}"))
}

const CLUSTER: &str = "cluster-api-v1.14/cluster.x-k8s.io_clusters.yaml";
const KCP: &str = "cluster-api-v1.14/controlplane.cluster.x-k8s.io_kubeadmcontrolplanes.yaml";
const VMT: &str = "capv-v1.17/infrastructure.cluster.x-k8s.io_vspheremachinetemplates.yaml";
const HELMRELEASE: &str = "flux-v2/helm.toolkit.fluxcd.io_helmreleases.yaml";

/// The full admission pipeline of a custom resource: prune, default, validate.
#[track_caller]
fn admit(mut obj: Value, schema: &Value) -> (Value, Vec<String>, Vec<Cause>) {
    let pruned = prune(&mut obj, schema);
    default(&mut obj, schema);
    let causes = validate(&obj, schema);
    (obj, pruned, causes)
}

/// Renders causes as `field: message (reason)` lines for compact assertions.
fn render(causes: &[Cause]) -> Vec<String> {
    causes
        .iter()
        .map(|c| format!("{}: {} ({})", c.field, c.message, c.reason))
        .collect()
}

fn good_cluster() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "default", "labels": {"a": "b"}},
        "spec": {
            "clusterNetwork": {
                "pods": {"cidrBlocks": ["192.168.0.0/16"]},
                "services": {"cidrBlocks": ["10.96.0.0/12"]},
                "apiServerPort": 6443
            },
            "controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443},
            "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "c1-cp"},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "VSphereCluster", "name": "c1"},
            "topology": {
                "classRef": {"name": "fledge"},
                "version": "v1.32.0",
                "variables": [{"name": "vip", "value": {"any": {"nested": ["thing", 1]}}}]
            }
        }
    })
}

#[test]
fn cluster_good_object_passes_unchanged() {
    let schema = crd_schema(CLUSTER, "v1beta2");
    let (obj, pruned, causes) = admit(good_cluster(), &schema);
    assert_eq!(render(&causes), Vec::<String>::new());
    assert_eq!(pruned, Vec::<String>::new());
    assert_eq!(obj, good_cluster());
}

#[test]
fn cluster_type_mismatch_matches_apiserver_message() {
    let schema = crd_schema(CLUSTER, "v1beta2");
    let mut obj = good_cluster();
    obj["spec"]["clusterNetwork"]["apiServerPort"] = json!("string");
    let causes = validate(&obj, &schema);
    assert_eq!(
        causes,
        vec![Cause {
            reason: "FieldValueTypeInvalid".into(),
            message: r#"Invalid value: "string": spec.clusterNetwork.apiServerPort in body must be of type integer: "string""#.into(),
            field: "spec.clusterNetwork.apiServerPort".into(),
        }]
    );
    assert_eq!(
        invalid_message(&causes),
        r#"spec.clusterNetwork.apiServerPort: Invalid value: "string": spec.clusterNetwork.apiServerPort in body must be of type integer: "string""#
    );
}

#[test]
fn cluster_bad_objects_report_exact_paths() {
    let schema = crd_schema(CLUSTER, "v1beta2");
    let mut obj = good_cluster();
    obj["spec"]["controlPlaneRef"]
        .as_object_mut()
        .map(|m| m.remove("name"));
    obj["spec"]["controlPlaneEndpoint"]["port"] = json!(70000);
    obj["spec"]["infrastructureRef"]["kind"] = json!("1bad");
    obj["spec"]["clusterNetwork"]["pods"]["cidrBlocks"] = json!([]);
    obj["spec"]["topology"]["variables"] =
        json!([{"name": "a", "value": 1}, {"name": "a", "value": 2}]);
    let got = render(&validate(&obj, &schema));
    let want = [
        "spec.clusterNetwork.pods.cidrBlocks: Invalid value: 0: spec.clusterNetwork.pods.cidrBlocks in body should have at least 1 items (FieldValueInvalid)",
        "spec.controlPlaneEndpoint.port: Invalid value: 70000: spec.controlPlaneEndpoint.port in body should be less than or equal to 65535 (FieldValueInvalid)",
        "spec.controlPlaneRef.name: Required value (FieldValueRequired)",
        r#"spec.infrastructureRef.kind: Invalid value: "1bad": spec.infrastructureRef.kind in body should match '^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$' (FieldValueInvalid)"#,
        r#"spec.topology.variables[1]: Duplicate value: map[string]interface {}{"name":"a"} (FieldValueDuplicate)"#,
    ];
    assert_eq!(got, want);
}

#[test]
fn cluster_missing_spec_is_required() {
    let schema = crd_schema(CLUSTER, "v1beta2");
    let obj = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "c"}});
    assert_eq!(
        render(&validate(&obj, &schema)),
        vec!["spec: Required value (FieldValueRequired)"]
    );
}

#[test]
fn unknown_fields_are_pruned_with_paths_but_metadata_and_preserved_subtrees_kept() {
    let schema = crd_schema(CLUSTER, "v1beta2");
    let mut obj = good_cluster();
    obj["spec"]["bogus"] = json!(1);
    obj["spec"]["clusterNetwork"]["pods"]["extra"] = json!({"x": 1});
    obj["spec"]["topology"]["variables"][0]["unknownToo"] = json!(true);
    obj["metadata"]["annotations"] = json!({"k": "v"});
    obj["status"] = json!({"phase": "Provisioned", "nope": 1});
    obj["topLevel"] = json!("x");
    let (out, pruned, causes) = admit(obj, &schema);
    assert_eq!(
        pruned,
        vec![
            "spec.clusterNetwork.pods.extra",
            "spec.topology.variables[0].unknownToo",
            "spec.bogus",
            "status.nope",
            "topLevel"
        ]
    );
    assert_eq!(render(&causes), Vec::<String>::new());
    let mut want = good_cluster();
    want["metadata"]["annotations"] = json!({"k": "v"});
    want["status"] = json!({"phase": "Provisioned"});
    assert_eq!(out, want);
    // The variable value is under x-kubernetes-preserve-unknown-fields: kept verbatim.
    assert_eq!(
        out["spec"]["topology"]["variables"][0]["value"],
        json!({"any": {"nested": ["thing", 1]}})
    );
}

#[test]
fn kcp_good_and_bad() {
    let schema = crd_schema(KCP, "v1beta2");
    let good = json!({
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmControlPlane",
        "metadata": {"name": "cp", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "version": "v1.32.0",
            "machineTemplate": {"spec": {"infrastructureRef": {
                "apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "VSphereMachineTemplate", "name": "cp"}}},
            "rollout": {"after": "2026-01-01T00:00:00Z"},
            "kubeadmConfigSpec": {"format": "cloud-config", "preKubeadmCommands": ["echo hi"]}
        }
    });
    let (out, pruned, causes) = admit(good.clone(), &schema);
    assert_eq!(render(&causes), Vec::<String>::new());
    assert!(pruned.is_empty(), "{pruned:?}");
    assert_eq!(out, good);

    let mut bad = good;
    bad["spec"]["replicas"] = json!(1.5);
    bad["spec"]["rollout"]["after"] = json!("yesterday");
    bad["spec"]["kubeadmConfigSpec"]["format"] = json!("yaml");
    bad["spec"]["machineTemplate"] = json!({});
    let got = render(&validate(&bad, &schema));
    assert_eq!(
        got,
        vec![
            r#"spec.kubeadmConfigSpec.format: Unsupported value: "yaml": supported values: "cloud-config", "ignition" (FieldValueNotSupported)"#,
            "spec.machineTemplate.spec: Required value (FieldValueRequired)",
            r#"spec.replicas: Invalid value: "number": spec.replicas in body must be of type integer: "number" (FieldValueTypeInvalid)"#,
            r#"spec.rollout.after: Invalid value: "yesterday": spec.rollout.after in body must be of type date-time: "yesterday" (FieldValueTypeInvalid)"#,
        ]
    );
}

fn good_vmt() -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
        "kind": "VSphereMachineTemplate",
        "metadata": {"name": "cp", "namespace": "default"},
        "spec": {"template": {"spec": {
            "template": "ubuntu-2204-kube-v1.32.0",
            "server": "vcenter.example.com",
            "numCPUs": 4,
            "memoryMiB": 8192,
            "diskGiB": 40,
            "cloneMode": "linkedClone",
            "network": {"devices": [{"networkName": "VM Network", "dhcp4": true}]},
            "dataDisks": [{"name": "d1", "sizeGiB": 10}]
        }}}
    })
}

#[test]
fn vsphere_machine_template_good_and_bad() {
    let schema = crd_schema(VMT, "v1beta2");
    let (out, pruned, causes) = admit(good_vmt(), &schema);
    assert_eq!(render(&causes), Vec::<String>::new());
    assert!(pruned.is_empty(), "{pruned:?}");
    assert_eq!(out, good_vmt());

    let mut bad = good_vmt();
    let spec = &mut bad["spec"]["template"]["spec"];
    spec["numCPUs"] = json!(1);
    spec["diskGiB"] = json!(3_000_000_000_i64);
    spec["cloneMode"] = json!("copy");
    spec["dataDisks"] = json!([{"name": "d1"}]);
    spec["tagIDs"] = json!("not-a-list");
    spec.as_object_mut().map(|m| m.remove("template"));
    let got = render(&validate(&bad, &schema));
    assert_eq!(
        got,
        vec![
            r#"spec.template.spec.cloneMode: Unsupported value: "copy": supported values: "fullClone", "linkedClone" (FieldValueNotSupported)"#,
            "spec.template.spec.dataDisks[0].sizeGiB: Required value (FieldValueRequired)",
            r#"spec.template.spec.diskGiB: Invalid value: 3000000000: spec.template.spec.diskGiB in body must be of type int32: "3000000000" (FieldValueTypeInvalid)"#,
            "spec.template.spec.numCPUs: Invalid value: 1: spec.template.spec.numCPUs in body should be greater than or equal to 2 (FieldValueInvalid)",
            r#"spec.template.spec.tagIDs: Invalid value: "string": spec.template.spec.tagIDs in body must be of type array: "string" (FieldValueTypeInvalid)"#,
            "spec.template.spec.template: Required value (FieldValueRequired)",
        ]
    );
}

#[test]
fn vsphere_machine_template_v1beta1_defaults_power_off_mode() {
    let schema = crd_schema(VMT, "v1beta1");
    let mut obj = json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
        "kind": "VSphereMachineTemplate",
        "metadata": {"name": "cp"},
        "spec": {"template": {"spec": {"template": "t", "network": {"devices": []}}}}
    });
    default(&mut obj, &schema);
    assert_eq!(
        obj["spec"]["template"]["spec"]["powerOffMode"],
        json!("hard")
    );
    // An explicit value wins over the default.
    obj["spec"]["template"]["spec"]["powerOffMode"] = json!("soft");
    default(&mut obj, &schema);
    assert_eq!(
        obj["spec"]["template"]["spec"]["powerOffMode"],
        json!("soft")
    );
}

fn good_helmrelease() -> Value {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "cilium", "namespace": "kube-system"},
        "spec": {
            "interval": "10m",
            "chart": {"spec": {"chart": "cilium", "sourceRef": {"kind": "HelmRepository", "name": "cilium"}}},
            "values": {"anything": {"goes": [1, "two", {"three": null}]}},
            "uninstall": {}
        }
    })
}

#[test]
fn helmrelease_defaults_preserves_values_and_validates() {
    let schema = crd_schema(HELMRELEASE, "v2");
    let (out, pruned, causes) = admit(good_helmrelease(), &schema);
    assert_eq!(render(&causes), Vec::<String>::new());
    assert!(pruned.is_empty(), "{pruned:?}");
    assert_eq!(out["spec"]["values"], good_helmrelease()["spec"]["values"]);
    assert_eq!(
        out["spec"]["uninstall"]["deletionPropagation"],
        json!("background")
    );
    assert_eq!(
        out["spec"]["chart"]["spec"]["reconcileStrategy"],
        json!("ChartVersion")
    );
    assert_eq!(out["spec"]["chart"]["spec"]["version"], json!("*"));
    // Defaults of a missing parent are not invented.
    assert!(out["spec"].get("install").is_none());

    let mut bad = good_helmrelease();
    bad["spec"]["interval"] = json!("ten minutes");
    bad["spec"]["releaseName"] = json!("x".repeat(60));
    bad["spec"]["chart"]["spec"]["sourceRef"]["kind"] = json!("OCIRepository");
    let got = render(&validate(&bad, &schema));
    assert_eq!(
        got,
        vec![
            r#"spec.chart.spec.sourceRef.kind: Unsupported value: "OCIRepository": supported values: "HelmRepository", "GitRepository", "Bucket" (FieldValueNotSupported)"#,
            r#"spec.interval: Invalid value: "ten minutes": spec.interval in body should match '^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$' (FieldValueInvalid)"#,
            "spec.releaseName: Too long: may not be more than 53 bytes (FieldValueTooLong)",
        ]
    );
    let missing = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "x"}, "spec": {}});
    assert_eq!(
        render(&validate(&missing, &schema)),
        vec!["spec.interval: Required value (FieldValueRequired)"]
    );
}

#[test]
fn status_default_applies_to_flux_objects() {
    let schema = crd_schema(HELMRELEASE, "v2");
    let mut obj = good_helmrelease();
    default(&mut obj, &schema);
    assert_eq!(obj["status"], json!({"observedGeneration": -1}));
}

#[test]
fn null_handling_follows_nullable_and_default() {
    let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "a": {"type": "string"},
            "b": {"type": "string", "default": "dflt"},
            "c": {"type": "string", "nullable": true},
            "list": {"type": "array", "items": {"type": "string"}}
        }}
    }});
    let mut obj = json!({"spec": {"a": null, "b": null, "c": null, "list": ["x", null]}});
    default(&mut obj, &schema);
    assert_eq!(
        obj,
        json!({"spec": {"b": "dflt", "c": null, "list": ["x", null]}})
    );
    assert_eq!(
        render(&validate(&obj, &schema)),
        vec![
            r#"spec.list[1]: Invalid value: "null": spec.list[1] in body must be of type string: "null" (FieldValueTypeInvalid)"#
        ]
    );
}

#[test]
fn nested_defaults_apply_inside_defaulted_objects() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "outer": {"type": "object", "default": {}, "properties": {"inner": {"type": "integer", "default": 5}}},
        "items": {"type": "array", "items": {"type": "object", "properties": {"p": {"type": "string", "default": "TCP"}}}},
        "byName": {"type": "object", "additionalProperties": {"type": "object", "properties": {"x": {"type": "boolean", "default": false}}}}
    }}}});
    let mut obj = json!({"spec": {"items": [{}, {"p": "UDP"}], "byName": {"k": {}}}});
    default(&mut obj, &schema);
    assert_eq!(
        obj,
        json!({"spec": {"items": [{"p": "TCP"}, {"p": "UDP"}], "byName": {"k": {"x": false}}, "outer": {"inner": 5}}})
    );
}

#[test]
fn keyword_table() {
    struct Case {
        schema: Value,
        value: Value,
        want: &'static [&'static str],
    }
    let cases = [
        Case {
            schema: json!({"type": "string", "minLength": 3}),
            value: json!("ab"),
            want: &[
                r#"f: Invalid value: "ab": f in body should be at least 3 chars long (FieldValueInvalid)"#,
            ],
        },
        Case {
            schema: json!({"type": "string", "maxLength": 1}),
            value: json!("é"),
            want: &[],
        },
        Case {
            schema: json!({"type": "integer", "minimum": 0, "exclusiveMinimum": true}),
            value: json!(0),
            want: &["f: Invalid value: 0: f in body should be greater than 0 (FieldValueInvalid)"],
        },
        Case {
            schema: json!({"type": "number", "maximum": 1.5, "exclusiveMaximum": true}),
            value: json!(1.5),
            want: &["f: Invalid value: 1.5: f in body should be less than 1.5 (FieldValueInvalid)"],
        },
        Case {
            schema: json!({"type": "integer", "multipleOf": 5}),
            value: json!(12),
            want: &[
                "f: Invalid value: 12: f in body should be a multiple of 5 (FieldValueInvalid)",
            ],
        },
        Case {
            schema: json!({"type": "integer", "maximum": 1000000}),
            value: json!(2000000),
            want: &[
                "f: Invalid value: 2000000: f in body should be less than or equal to 1e+06 (FieldValueInvalid)",
            ],
        },
        Case {
            schema: json!({"type": "integer"}),
            value: json!(3.0),
            want: &[],
        },
        Case {
            schema: json!({"type": "number"}),
            value: json!(3),
            want: &[],
        },
        Case {
            schema: json!({"type": "array", "maxItems": 1}),
            value: json!([1, 2]),
            want: &["f: Too many: 2: must have at most 1 item (FieldValueTooMany)"],
        },
        Case {
            schema: json!({"type": "object", "maxProperties": 1}),
            value: json!({"a": 1, "b": 2}),
            want: &["f: Too many: 2: must have at most 1 item (FieldValueTooMany)"],
        },
        Case {
            schema: json!({"type": "object", "minProperties": 1}),
            value: json!({}),
            want: &[
                "f: Invalid value: 0: f in body should have at least 1 properties (FieldValueInvalid)",
            ],
        },
        Case {
            schema: json!({"x-kubernetes-int-or-string": true}),
            value: json!(true),
            want: &[
                r#"f: Invalid value: "boolean": f in body must be of type integer,string: "boolean" (FieldValueTypeInvalid)"#,
            ],
        },
        Case {
            schema: json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
            value: json!("50%"),
            want: &[],
        },
        Case {
            schema: json!({"type": "integer", "enum": [1, 2]}),
            value: json!(3),
            want: &[
                r#"f: Unsupported value: 3: supported values: "1", "2" (FieldValueNotSupported)"#,
            ],
        },
        Case {
            schema: json!({"type": "string", "format": "byte"}),
            value: json!("aGVsbG8="),
            want: &[],
        },
        Case {
            schema: json!({"type": "string", "format": "byte"}),
            value: json!("%%%"),
            want: &[
                r#"f: Invalid value: "%%%": f in body must be of type byte: "%%%" (FieldValueTypeInvalid)"#,
            ],
        },
        Case {
            schema: json!({"type": "string", "format": "date-time"}),
            value: json!("2026-11-29T19:53:49.123Z"),
            want: &[],
        },
        Case {
            schema: json!({"type": "string", "format": "uri"}),
            value: json!("https://example.com/x"),
            want: &[],
        },
        Case {
            schema: json!({"type": "string", "format": "uri"}),
            value: json!("not a uri"),
            want: &[
                r#"f: Invalid value: "not a uri": f in body must be of type uri: "not a uri" (FieldValueTypeInvalid)"#,
            ],
        },
        Case {
            schema: json!({"type": "string", "format": "some-custom-format"}),
            value: json!("anything"),
            want: &[],
        },
        Case {
            schema: json!({"type": "integer", "format": "int64"}),
            value: json!(9_000_000_000_i64),
            want: &[],
        },
        Case {
            schema: json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}),
            value: json!(["a", "b", "a"]),
            want: &[r#"f[2]: Duplicate value: "a" (FieldValueDuplicate)"#],
        },
        Case {
            schema: json!({"type": "string", "oneOf": [{"pattern": "^a"}, {"pattern": "b$"}]}),
            value: json!("ab"),
            want: &[
                r#"f: Invalid value: "": "f" must validate one and only one schema (oneOf) (FieldValueInvalid)"#,
            ],
        },
        Case {
            schema: json!({"type": "string", "not": {"enum": ["x"]}}),
            value: json!("x"),
            want: &[
                r#"f: Invalid value: "": "f" must not validate the schema (not) (FieldValueInvalid)"#,
            ],
        },
        Case {
            schema: json!({"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}),
            value: json!({"metadata": {}}),
            want: &[
                "f.apiVersion: Required value: must not be empty (FieldValueRequired)",
                "f.kind: Required value: must not be empty (FieldValueRequired)",
            ],
        },
        Case {
            schema: json!({"type": "object", "nullable": true}),
            value: Value::Null,
            want: &[],
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let schema = json!({"type": "object", "properties": {"f": case.schema}});
        let got = render(&validate(&json!({"f": case.value}), &schema));
        assert_eq!(
            got, case.want,
            "case {i}: {} with {}",
            case.schema, case.value
        );
    }
}

#[test]
fn invalid_message_aggregates_like_the_apiserver() {
    let c = |f: &str, m: &str| Cause {
        reason: "FieldValueRequired".into(),
        message: m.into(),
        field: f.into(),
    };
    assert_eq!(
        invalid_message(&[c("spec.a", "Required value")]),
        "spec.a: Required value"
    );
    assert_eq!(
        invalid_message(&[
            c("spec.a", "Required value"),
            c("spec.b", "Required value"),
            c("spec.a", "Required value")
        ]),
        "[spec.a: Required value, spec.b: Required value]"
    );
}

#[test]
fn embedded_resource_metadata_is_coerced_and_kept() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "template": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}}
    }}}});
    let mut obj = json!({"spec": {"template": {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}, "junk": 1},
        "spec": {}, "other": 2
    }}});
    let pruned = prune(&mut obj, &schema);
    assert_eq!(
        pruned,
        vec!["spec.template.metadata.junk", "spec.template.other"]
    );
    assert_eq!(
        obj,
        json!({"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {}}}})
    );
    assert!(validate(&obj, &schema).is_empty());
}

#[test]
fn schema_list_keys_from_real_crds() {
    let keys = SchemaListKeys::new(crd_schema(CLUSTER, "v1beta2"));
    assert_eq!(
        keys.list_type(&["spec", "topology", "workers", "machineDeployments"]),
        Some(ListType::Map(vec!["name".into()]))
    );
    assert_eq!(
        keys.list_type(&["spec", "topology", "controlPlane", "taints"]),
        Some(ListType::Map(vec!["key".into(), "effect".into()]))
    );
    assert_eq!(
        keys.list_type(&["spec", "clusterNetwork", "pods", "cidrBlocks"]),
        Some(ListType::Atomic)
    );
    // Nested through list elements.
    assert_eq!(
        keys.list_type(&[
            "spec",
            "topology",
            "workers",
            "machineDeployments",
            "readinessGates"
        ]),
        Some(ListType::Map(vec!["conditionType".into()]))
    );
    assert_eq!(keys.list_type(&["spec", "paused"]), None);
    assert_eq!(keys.list_type(&["spec", "nope"]), None);

    let set = SchemaListKeys::new(json!({"type": "object", "properties": {
        "s": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "plain": {"type": "array", "items": {"type": "string"}},
        "m": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"],
              "items": {"type": "object", "properties": {"port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}}}},
        "atomicMap": {"type": "object", "x-kubernetes-map-type": "atomic"}
    }}));
    assert_eq!(set.list_type(&["s"]), Some(ListType::Set));
    assert_eq!(set.list_type(&["plain"]), Some(ListType::Atomic));
    assert_eq!(set.map_key_default(&["m"], "protocol"), Some(json!("TCP")));
    assert_eq!(set.map_key_default(&["m"], "port"), None);
    assert!(set.map_is_atomic(&["atomicMap"]));
    assert!(!set.map_is_atomic(&["m"]));
}

#[test]
fn every_reference_crd_loads_and_accepts_a_minimal_object() {
    // Every served version of every upstream CRD is usable: prune/default/validate
    // run without panicking and an object with only metadata reports at most
    // root-level `required` errors.
    let mut checked = 0;
    for dir in ["capv-v1.17", "cluster-api-v1.14", "flux-v2"] {
        let entries =
            std::fs::read_dir(crds_dir().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let crd: Value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{:?}: {e}", entry.path()));
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let schema = &version["schema"]["openAPIV3Schema"];
                assert!(schema.is_object(), "{:?} {}", entry.path(), version["name"]);
                let (_, pruned, causes) =
                    admit(json!({"metadata": {"name": "x"}, "junk": 1}), schema);
                assert_eq!(pruned, vec!["junk"]);
                assert!(
                    causes
                        .iter()
                        .all(|c| c.reason == "FieldValueRequired" && !c.field.contains('.')),
                    "{causes:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} CRD versions found");
}
