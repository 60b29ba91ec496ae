//! Render tests: golden files of the examples, then one test per promise of the module
//! docs. Refresh the golden files with `UPDATE_EXPECT=1 cargo test -p fledge-core render`
//! and review the diff.

use expect_test::{ExpectFile, expect_file};
use serde_json::{Value, json};

use super::*;
use crate::spec::{Addon, Autoscaling, ClusterProfile, HelmChart};

const EDGE_1: &str = include_str!("../../../../examples/edge-1.yaml");
const SINGLE_NODE: &str = include_str!("../../../../examples/single-node.yaml");

// === fixtures ===

/// The `WorkloadCluster` and the `ClusterProfile`s of a multi-document spec file.
fn parse(yaml: &str) -> (WorkloadCluster, Vec<ClusterProfile>) {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("fixture is YAML");
    let mut cluster = None;
    let mut profiles = Vec::new();
    for doc in docs {
        match doc["kind"].as_str() {
            Some("WorkloadCluster") => {
                cluster = Some(serde_json::from_value(doc).expect("fixture cluster parses"));
            }
            Some("ClusterProfile") => {
                profiles.push(serde_json::from_value(doc).expect("fixture profile parses"));
            }
            other => panic!("unexpected kind {other:?} in fixture"),
        }
    }
    (cluster.expect("fixture has a WorkloadCluster"), profiles)
}

fn edge_1() -> WorkloadCluster {
    parse(EDGE_1).0
}

fn single_node() -> WorkloadCluster {
    parse(SINGLE_NODE).0
}

fn objects(cluster: &WorkloadCluster, phase: Phase) -> Vec<Value> {
    render(cluster, phase).expect("fixture renders")
}

fn kinds(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {:?}", kinds(objs)))
}

fn pool<'a>(rendered: &'a RenderedCluster, name: &str) -> &'a RenderedPool {
    rendered
        .pools
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pool {name}"))
}

// === golden files ===

/// The only caller of `render` + `to_yaml_stream` for golden files.
#[track_caller]
fn check(yaml: &str, phase: Phase, expect: ExpectFile) {
    let (cluster, _) = parse(yaml);
    expect.assert_eq(&to_yaml_stream(&objects(&cluster, phase)));
}

#[test]
fn edge_1_bootstrap_matches_golden_file() {
    check(
        EDGE_1,
        Phase::Bootstrap,
        expect_file!["snapshots/edge-1.bootstrap.yaml"],
    );
}

#[test]
fn edge_1_full_matches_golden_file() {
    check(
        EDGE_1,
        Phase::Full,
        expect_file!["snapshots/edge-1.full.yaml"],
    );
}

#[test]
fn single_node_bootstrap_matches_golden_file() {
    check(
        SINGLE_NODE,
        Phase::Bootstrap,
        expect_file!["snapshots/single-node.bootstrap.yaml"],
    );
}

#[test]
fn single_node_full_matches_golden_file() {
    check(
        SINGLE_NODE,
        Phase::Full,
        expect_file!["snapshots/single-node.full.yaml"],
    );
}

#[test]
fn edge_1_addons_match_golden_file() {
    let (cluster, profiles) = parse(EDGE_1);
    let mut objs = Vec::new();
    for addon in &profiles[0].spec.addons {
        objs.extend(render_addon(&cluster, addon).expect("fixture add-on renders"));
    }
    expect_file!["snapshots/edge-1.addons.yaml"].assert_eq(&to_yaml_stream(&objs));
}

// === phases ===

#[test]
fn bootstrap_has_one_control_plane_replica_and_no_pools() {
    let objs = objects(&edge_1(), Phase::Bootstrap);
    assert_eq!(
        objs.iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "Cluster",
            "VSphereCluster",
            "VSphereMachineTemplate",
            "KubeadmControlPlane"
        ]
    );
    assert_eq!(
        find(&objs, "KubeadmControlPlane", "edge-1-control-plane")["spec"]["replicas"],
        1
    );
}

#[test]
fn full_has_spec_replicas_pools_and_health_checks_in_order() {
    let objs = objects(&edge_1(), Phase::Full);
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Cluster",
            "VSphereCluster",
            "VSphereMachineTemplate",
            "KubeadmControlPlane",
            "KubeadmConfigTemplate",
            "VSphereMachineTemplate",
            "MachineDeployment",
            "KubeadmConfigTemplate",
            "VSphereMachineTemplate",
            "MachineDeployment",
            "MachineHealthCheck",
            "MachineHealthCheck",
            "MachineHealthCheck",
        ]
    );
    assert_eq!(
        find(&objs, "KubeadmControlPlane", "edge-1-control-plane")["spec"]["replicas"],
        3
    );
    assert_eq!(
        find(&objs, "MachineDeployment", "edge-1-general")["spec"]["replicas"],
        3
    );
    for name in ["edge-1-control-plane", "edge-1-general", "edge-1-batch"] {
        assert_eq!(
            find(&objs, "MachineHealthCheck", name)["spec"]["clusterName"],
            "edge-1"
        );
    }
}

#[test]
fn bootstrap_objects_are_the_full_objects_but_for_the_replica_count() {
    let cluster = edge_1();
    let bootstrap = objects(&cluster, Phase::Bootstrap);
    let full = objects(&cluster, Phase::Full);
    for (i, obj) in bootstrap.iter().enumerate() {
        let mut obj = obj.clone();
        if obj["kind"] == "KubeadmControlPlane" {
            obj["spec"]["replicas"] = json!(3);
        }
        assert_eq!(obj, full[i], "object {i}");
    }
}

#[test]
fn phase_parses_and_prints_its_name() {
    for phase in [Phase::Bootstrap, Phase::Full] {
        assert_eq!(phase.to_string().parse::<Phase>(), Ok(phase));
    }
    assert_eq!(
        "pivot".parse::<Phase>().unwrap_err().to_string(),
        r#"unknown phase "pivot": expected bootstrap or full"#
    );
}

// === labels, names, references ===

#[test]
fn every_object_has_the_standard_labels_and_the_cluster_namespace() {
    for (cluster, namespace) in [(edge_1(), "team-a"), (single_node(), "default")] {
        let name = cluster.metadata.name.clone().unwrap();
        for phase in [Phase::Bootstrap, Phase::Full] {
            for obj in objects(&cluster, phase) {
                let meta = &obj["metadata"];
                let what = format!("{phase} {}/{}", obj["kind"], meta["name"]);
                assert_eq!(
                    meta["labels"][names::CLUSTER_NAME_LABEL],
                    name.as_str(),
                    "{what}"
                );
                assert_eq!(
                    meta["labels"][names::FLEDGE_CLUSTER_LABEL],
                    name.as_str(),
                    "{what}"
                );
                assert_eq!(meta["namespace"], namespace, "{what}");
            }
        }
    }
}

#[test]
fn references_point_at_rendered_objects() {
    let objs = objects(&edge_1(), Phase::Full);
    let cluster = find(&objs, "Cluster", "edge-1");
    for field in ["controlPlaneRef", "infrastructureRef"] {
        let r = &cluster["spec"][field];
        find(
            &objs,
            r["kind"].as_str().unwrap(),
            r["name"].as_str().unwrap(),
        );
    }
    let kcp = find(&objs, "KubeadmControlPlane", "edge-1-control-plane");
    let r = &kcp["spec"]["machineTemplate"]["spec"]["infrastructureRef"];
    find(&objs, "VSphereMachineTemplate", r["name"].as_str().unwrap());
    for md in objs.iter().filter(|o| o["kind"] == "MachineDeployment") {
        let spec = &md["spec"]["template"]["spec"];
        find(
            &objs,
            "KubeadmConfigTemplate",
            spec["bootstrap"]["configRef"]["name"].as_str().unwrap(),
        );
        find(
            &objs,
            "VSphereMachineTemplate",
            spec["infrastructureRef"]["name"].as_str().unwrap(),
        );
        // Cluster API rejects a selector that does not match the machine labels.
        let labels = &md["spec"]["template"]["metadata"]["labels"];
        for (k, v) in md["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{k}");
        }
    }
}

#[test]
fn template_name_is_cluster_group_and_six_hex_digits() {
    let name = template_name("edge-1", "general", &json!({"cpus": 4}));
    let hash = name.strip_prefix("edge-1-general-").expect("prefix");
    assert_eq!(hash.len(), 6, "{name}");
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{name}"
    );
    assert_eq!(
        name,
        template_name("edge-1", "general", &json!({"cpus": 4}))
    );
    assert_ne!(
        name,
        template_name("edge-1", "general", &json!({"cpus": 8}))
    );
}

/// Which template names a spec change renames: the control plane's and the `general`
/// pool's `VSphereMachineTemplate`, and the `general` pool's `KubeadmConfigTemplate`.
#[test]
fn template_names_change_exactly_when_their_content_does() {
    type Mutation = fn(&mut WorkloadCluster);
    let cases: [(&str, Mutation, [bool; 3]); 10] = [
        ("nothing", |_| {}, [false, false, false]),
        (
            "control-plane cpus",
            |c| c.spec.control_plane.machine.cpus = 8,
            [true, false, false],
        ),
        (
            "control-plane os template",
            |c| c.spec.control_plane.template = Some("ubuntu-2404-kube-v1.33.0".into()),
            [true, false, false],
        ),
        (
            "pool memory",
            |c| c.spec.workers[0].machine.memory_mib = 32768,
            [false, true, false],
        ),
        (
            "pool os template",
            |c| c.spec.workers[0].template = Some("flatcar-kube-v1.32.4".into()),
            [false, true, false],
        ),
        (
            "shared os template",
            |c| c.spec.infrastructure.vsphere.as_mut().unwrap().template = "other".into(),
            [true, true, false],
        ),
        (
            "pool labels",
            |c| {
                c.spec.workers[0].labels.insert("zone".into(), "a".into());
            },
            [false, false, true],
        ),
        (
            "control-plane replicas",
            |c| c.spec.control_plane.replicas = 5,
            [false, false, false],
        ),
        (
            "pool replicas",
            |c| c.spec.workers[0].replicas = Some(7),
            [false, false, false],
        ),
        (
            "kubernetes version",
            |c| c.spec.kubernetes_version = "v1.32.5".into(),
            [false, false, false],
        ),
    ];
    let names = |c: &WorkloadCluster| {
        let r = render_objects(c, Phase::Full).unwrap();
        let general = pool(&r, "general");
        [
            r.control_plane_template.metadata.name.clone().unwrap(),
            general.machine_template.metadata.name.clone().unwrap(),
            general.config_template.metadata.name.clone().unwrap(),
        ]
    };
    let before = names(&edge_1());
    for (case, mutate, want_changed) in cases {
        let mut cluster = edge_1();
        mutate(&mut cluster);
        let after = names(&cluster);
        let changed = [0, 1, 2].map(|i| before[i] != after[i]);
        assert_eq!(changed, want_changed, "{case}: {before:?} -> {after:?}");
    }
}

#[test]
fn a_pool_template_override_changes_only_that_pool() {
    let mut cluster = edge_1();
    let before = render_objects(&cluster, Phase::Full).unwrap();
    cluster.spec.workers[1].template = Some("ubuntu-2404-kube-v1.32.4-gpu".into());
    let after = render_objects(&cluster, Phase::Full).unwrap();
    let md = &pool(&after, "batch")
        .machine_deployment
        .spec
        .template
        .spec
        .infrastructure_ref
        .name;
    assert_ne!(
        md,
        &pool(&before, "batch")
            .machine_deployment
            .spec
            .template
            .spec
            .infrastructure_ref
            .name
    );
    assert_eq!(
        md,
        pool(&after, "batch")
            .machine_template
            .metadata
            .name
            .as_ref()
            .unwrap()
    );
    assert_eq!(
        pool(&after, "general").machine_deployment,
        pool(&before, "general").machine_deployment
    );
    assert_eq!(after.control_plane, before.control_plane);
}

// === worker pools ===

#[test]
fn autoscaled_pool_has_bounds_annotations_and_no_replicas() {
    let objs = objects(&edge_1(), Phase::Full);
    let batch = find(&objs, "MachineDeployment", "edge-1-batch");
    assert!(batch["spec"].get("replicas").is_none(), "{batch:#}");
    let annotations = &batch["metadata"]["annotations"];
    assert_eq!(annotations[names::AUTOSCALER_MIN_SIZE_ANNOTATION], "1");
    assert_eq!(annotations[names::AUTOSCALER_MAX_SIZE_ANNOTATION], "6");

    let general = find(&objs, "MachineDeployment", "edge-1-general");
    assert_eq!(general["spec"]["replicas"], 3);
    assert!(
        general["metadata"].get("annotations").is_none(),
        "{general:#}"
    );
}

#[test]
fn turning_autoscaling_on_drops_replicas() {
    let mut cluster = edge_1();
    cluster.spec.workers[0].autoscaling = Some(Autoscaling {
        min_replicas: 2,
        max_replicas: 4,
    });
    let r = render_objects(&cluster, Phase::Full).unwrap();
    let md = &pool(&r, "general").machine_deployment;
    assert_eq!(md.spec.replicas, None);
    assert_eq!(
        md.metadata.annotations.as_ref().unwrap()[names::AUTOSCALER_MAX_SIZE_ANNOTATION],
        "4"
    );
}

#[test]
fn pool_labels_and_taints_go_to_the_join_node_registration() {
    let objs = objects(&edge_1(), Phase::Full);
    let batch_kct = objs
        .iter()
        .find(|o| {
            o["kind"] == "KubeadmConfigTemplate"
                && o["metadata"]["labels"][names::POOL_LABEL] == "batch"
        })
        .unwrap();
    let registration =
        &batch_kct["spec"]["template"]["spec"]["joinConfiguration"]["nodeRegistration"];
    assert_eq!(
        registration["kubeletExtraArgs"],
        json!([{"name": "cloud-provider", "value": "external"}, {"name": "node-labels", "value": "tier=batch"}])
    );
    assert_eq!(
        registration["taints"],
        json!([{"key": "fledge.dev/batch", "value": "true", "effect": "NoSchedule"}])
    );

    let general_kct = objs
        .iter()
        .find(|o| {
            o["kind"] == "KubeadmConfigTemplate"
                && o["metadata"]["labels"][names::POOL_LABEL] == "general"
        })
        .unwrap();
    let registration =
        &general_kct["spec"]["template"]["spec"]["joinConfiguration"]["nodeRegistration"];
    assert!(registration.get("taints").is_none(), "{registration:#}");
}

#[test]
fn a_pool_named_like_the_control_plane_is_rejected() {
    let mut cluster = edge_1();
    cluster.spec.workers[1].name = CONTROL_PLANE_GROUP.into();
    let err = render(&cluster, Phase::Full).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"spec.workers[1].name: "control-plane" is reserved for the control plane"#
    );
    // The bootstrap phase has no pools, so it does not care.
    assert!(render(&cluster, Phase::Bootstrap).is_ok());
}

#[test]
fn a_machine_deployment_name_longer_than_a_label_value_is_rejected() {
    let mut cluster = edge_1();
    cluster.spec.workers[0].name = "p".repeat(60);
    let err = render(&cluster, Phase::Full).unwrap_err();
    assert!(
        matches!(err, RenderError::NameTooLong { max: 63, .. }),
        "{err}"
    );
}

// === control plane ===

#[test]
fn certificates_drive_the_rollout_of_every_machine_owner() {
    let r = render_objects(&edge_1(), Phase::Full).unwrap();
    let rollout = r.control_plane.spec.rollout.as_ref().unwrap();
    assert_eq!(
        rollout.before.as_ref().unwrap().certificates_expiry_days,
        Some(30)
    );
    assert_eq!(rollout.after, None);

    let mut cluster = edge_1();
    cluster.spec.certificates = Some(crate::spec::CertificatesSpec {
        renew_before_expiry_days: Some(45),
        rotate_after: Some("2025-06-01T00:00:00Z".into()),
    });
    let r = render_objects(&cluster, Phase::Full).unwrap();
    let rollout = r.control_plane.spec.rollout.as_ref().unwrap();
    assert_eq!(
        rollout.before.as_ref().unwrap().certificates_expiry_days,
        Some(45)
    );
    assert_eq!(rollout.after.as_deref(), Some("2025-06-01T00:00:00Z"));
    for p in &r.pools {
        let after = p
            .machine_deployment
            .spec
            .rollout
            .as_ref()
            .unwrap()
            .after
            .as_deref();
        assert_eq!(after, Some("2025-06-01T00:00:00Z"), "{}", p.name);
    }
}

#[test]
fn control_plane_runs_kube_vip_for_the_endpoint() {
    let r = render_objects(&edge_1(), Phase::Bootstrap).unwrap();
    let files = &r.control_plane.spec.kubeadm_config_spec.files;
    let manifest = files
        .iter()
        .find(|f| f.path == "/etc/kubernetes/manifests/kube-vip.yaml")
        .and_then(|f| f.content.as_deref())
        .expect("kube-vip manifest");
    let pod: Value = serde_saphyr::from_str(manifest).expect("manifest is YAML");
    assert_eq!(pod["kind"], "Pod");
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "address", "value": "10.0.0.10"})),
        "{env:?}"
    );
    assert!(
        env.contains(&json!({"name": "port", "value": "6443"})),
        "{env:?}"
    );
    assert_eq!(
        r.vsphere_cluster.spec.control_plane_endpoint,
        Some(crate::capi::ApiEndpoint {
            host: "10.0.0.10".into(),
            port: 6443
        })
    );
}

#[test]
fn kube_vip_uses_super_admin_during_init_from_kubernetes_1_29() {
    let commands = |version: &str| {
        let mut cluster = edge_1();
        cluster.spec.kubernetes_version = version.into();
        let r = render_objects(&cluster, Phase::Bootstrap).unwrap();
        let spec = r.control_plane.spec.kubeadm_config_spec;
        (
            spec.pre_kubeadm_commands
                .iter()
                .any(|c| c.contains("kube-vip")),
            spec.post_kubeadm_commands.len(),
        )
    };
    assert_eq!(commands("v1.32.4"), (true, 1));
    assert_eq!(commands("v1.28.9"), (false, 0));
}

#[test]
fn a_cluster_without_pools_lets_workloads_on_the_control_plane() {
    let untainted = |cluster: &WorkloadCluster| {
        let r = render_objects(cluster, Phase::Full).unwrap();
        let spec = r.control_plane.spec.kubeadm_config_spec;
        let init = spec
            .init_configuration
            .unwrap()
            .node_registration
            .unwrap()
            .taints;
        let join = spec
            .join_configuration
            .unwrap()
            .node_registration
            .unwrap()
            .taints;
        assert_eq!(init, join);
        init == Some(Vec::new())
    };
    assert!(untainted(&single_node()));
    assert!(!untainted(&edge_1()));
}

#[test]
fn vsphere_credentials_come_from_the_secret_in_the_cluster_namespace() {
    let objs = objects(&edge_1(), Phase::Bootstrap);
    let vc = find(&objs, "VSphereCluster", "edge-1");
    assert_eq!(
        vc["spec"]["identityRef"],
        json!({"kind": "Secret", "name": "vsphere-credentials"})
    );
    assert_eq!(vc["spec"]["server"], "vcenter.example.com");
    assert_eq!(
        vc["spec"]["thumbprint"],
        "5D:01:06:63:55:9D:DF:FE:38:81:6E:2C:FA:71:BC:63:82:C5:16:51"
    );
    assert!(find(&objs, "VSphereCluster", "edge-1")["metadata"]["namespace"] == "team-a");
}

// === errors ===

#[test]
fn specs_render_cannot_express_are_errors_with_their_path() {
    type Mutation = fn(&mut WorkloadCluster);
    let cases: [(Mutation, &str); 4] = [
        (|c| c.metadata.name = None, "metadata.name: required"),
        (
            |c| c.metadata.namespace = None,
            "metadata.namespace: required",
        ),
        (
            |c| c.spec.infrastructure.vsphere = None,
            "spec.infrastructure.vsphere: required",
        ),
        (
            |c| c.spec.kubernetes_version = "latest".into(),
            r#"spec.kubernetesVersion: "latest" is not a vX.Y.Z version"#,
        ),
    ];
    for (mutate, want) in cases {
        let mut cluster = edge_1();
        mutate(&mut cluster);
        assert_eq!(
            render(&cluster, Phase::Bootstrap).unwrap_err().to_string(),
            want
        );
    }
}

// === determinism and YAML ===

#[test]
fn rendering_twice_gives_byte_identical_yaml() {
    for cluster in [edge_1(), single_node()] {
        for phase in [Phase::Bootstrap, Phase::Full] {
            let first = to_yaml_stream(&objects(&cluster, phase));
            let second = to_yaml_stream(&objects(&cluster.clone(), phase));
            assert_eq!(first, second);
        }
    }
}

#[test]
fn yaml_stream_round_trips_to_the_same_objects() {
    let objs = objects(&edge_1(), Phase::Full);
    let yaml = to_yaml_stream(&objs);
    let back: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(back, objs);
    assert_eq!(yaml.matches("\n---\n").count(), objs.len() - 1);
    assert!(!yaml.starts_with("---"));
}

#[test]
fn typed_objects_read_back_from_their_json() {
    let r = render_objects(&edge_1(), Phase::Full).unwrap();
    let values = r.to_values().unwrap();
    let kcp: crate::capi::KubeadmControlPlane = serde_json::from_value(values[3].clone()).unwrap();
    assert_eq!(kcp, r.control_plane);
    let md: crate::capi::MachineDeployment = serde_json::from_value(values[6].clone()).unwrap();
    assert_eq!(md, r.pools[0].machine_deployment);
}

// === add-ons ===

fn helm_addon(repository: &str, version: &str) -> Addon {
    Addon {
        name: "podinfo".into(),
        order: 0,
        depends_on: Vec::new(),
        manifests: None,
        helm: Some(HelmChart {
            repository: repository.into(),
            chart: "podinfo".into(),
            version: version.into(),
            namespace: None,
            release_name: None,
            values: None,
        }),
        health: None,
    }
}

#[test]
fn manifests_are_returned_as_written() {
    let (cluster, profiles) = parse(EDGE_1);
    let cni = &profiles[0].spec.addons[0];
    assert_eq!(
        render_addon(&cluster, cni).unwrap(),
        cni.manifests.clone().unwrap()
    );
}

#[test]
fn https_chart_becomes_helm_repository_and_release() {
    let objs = render_addon(
        &edge_1(),
        &helm_addon("https://stefanprodan.github.io/podinfo/", "6.7.1"),
    )
    .unwrap();
    assert_eq!(
        kinds(&objs),
        ["HelmRepository/podinfo", "HelmRelease/podinfo"]
    );
    assert_eq!(
        objs[0]["spec"]["url"],
        "https://stefanprodan.github.io/podinfo"
    );
    let release = &objs[1]["spec"];
    assert_eq!(
        release["chart"]["spec"]["sourceRef"],
        json!({"kind": "HelmRepository", "name": "podinfo", "namespace": "flux-system"})
    );
    assert_eq!(release["targetNamespace"], "podinfo");
    assert_eq!(release["releaseName"], "podinfo");
    for obj in &objs {
        assert_eq!(obj["metadata"]["namespace"], names::FLUX_NAMESPACE);
        assert_eq!(obj["metadata"]["labels"][names::ADDON_LABEL], "podinfo");
    }
}

#[test]
fn oci_chart_becomes_oci_repository_with_tag_or_semver() {
    let objs = render_addon(
        &edge_1(),
        &helm_addon("oci://ghcr.io/stefanprodan/charts", "6.7.1"),
    )
    .unwrap();
    assert_eq!(
        kinds(&objs),
        ["OCIRepository/podinfo", "HelmRelease/podinfo"]
    );
    assert_eq!(
        objs[0]["spec"]["url"],
        "oci://ghcr.io/stefanprodan/charts/podinfo"
    );
    assert_eq!(objs[0]["spec"]["ref"], json!({"tag": "6.7.1"}));
    assert_eq!(
        objs[1]["spec"]["chartRef"],
        json!({"kind": "OCIRepository", "name": "podinfo", "namespace": "flux-system"})
    );
    assert!(objs[1]["spec"].get("chart").is_none());

    let objs = render_addon(
        &edge_1(),
        &helm_addon("oci://ghcr.io/stefanprodan/charts", ">=6.0.0 <7.0.0"),
    )
    .unwrap();
    assert_eq!(objs[0]["spec"]["ref"], json!({"semver": ">=6.0.0 <7.0.0"}));
}

#[test]
fn bad_add_ons_are_errors_naming_the_add_on() {
    let cluster = edge_1();
    let mut empty = helm_addon("https://x.example.com", "1.0.0");
    empty.helm = None;
    let mut bad_manifest = empty.clone();
    bad_manifest.manifests = Some(vec![json!({"kind": "ConfigMap"})]);
    for (addon, want) in [
        (
            helm_addon("git://example.com/charts", "1.0.0"),
            r#"add-on podinfo: helm.repository "git://example.com/charts" is neither https:// nor oci://"#,
        ),
        (empty, "add-on podinfo: neither manifests nor helm is set"),
        (
            bad_manifest,
            "add-on podinfo: manifests[0]: apiVersion and kind must be non-empty strings",
        ),
    ] {
        assert_eq!(
            render_addon(&cluster, &addon).unwrap_err().to_string(),
            want
        );
    }
}

#[test]
fn helm_release_timeout_is_the_health_gate_timeout() {
    let (cluster, profiles) = parse(EDGE_1);
    let objs = render_addon(&cluster, &profiles[0].spec.addons[1]).unwrap();
    let release = find(&objs, "HelmRelease", "monitoring");
    assert_eq!(release["spec"]["timeout"], "600s");
    assert_eq!(
        release["spec"]["values"],
        json!({"grafana": {"enabled": false}})
    );
}
