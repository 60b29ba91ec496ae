//! The world driven with plain CAPI objects rendered by `fledge-core` (no manager): clusters
//! come up, control planes scale one Machine at a time, pause and provider removal stop the
//! controllers. Every wait polls the in-process API with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fledge_core::render::{Phase, render};
use fledge_core::spec::WorkloadCluster;
use fledge_sim::clock::Speed;
use fledge_sim::providers;
use fledge_sim::world::{World, WorldConfig};
use futures::StreamExt as _;
use kube::api::ListParams;
use kube_sim::ApiServer;
use kube_sim::api_server::{DeleteOptions, ListOptions, WatchOptions};
use serde_json::{Value, json};

const SINGLE_NODE: &str = include_str!("../../../examples/single-node.yaml");
const CAPI: &str = "cluster.x-k8s.io/v1beta2";
const KCP: &str = "controlplane.cluster.x-k8s.io/v1beta2";
const DEADLINE: Duration = Duration::from_secs(90);

async fn start_world() -> (Arc<World>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = WorldConfig::new(dir.path());
    config.speed = Speed(400.0);
    let world = World::start(config).await.unwrap();
    (world, dir)
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`].
async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rendered CAPI objects of `examples/single-node.yaml`, renamed to `name`.
fn rendered(name: &str) -> Vec<Value> {
    let mut doc: Value = serde_saphyr::from_str(SINGLE_NODE).unwrap();
    doc["metadata"]["name"] = json!(name);
    let cluster: WorkloadCluster = serde_json::from_value(doc).unwrap();
    render(&cluster, Phase::Bootstrap).unwrap()
}

fn apply_cluster(api: &ApiServer, name: &str, paused: bool) {
    api.create_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vsphere-credentials", "namespace": "default"},
        "data": {"username": STANDARD.encode("admin"), "password": STANDARD.encode("secret")},
    }))
    .or_else(|e| {
        if e.is_conflict() {
            Ok(json!({}))
        } else {
            Err(e)
        }
    })
    .unwrap();
    for mut obj in rendered(name) {
        if obj["kind"] == "Cluster" && paused {
            obj["spec"]["paused"] = json!(true);
        }
        api.create_object(obj.clone()).unwrap_or_else(|e| {
            panic!("creating {} {}: {e}", obj["kind"], obj["metadata"]["name"])
        });
    }
}

fn list(api: &ApiServer, api_version: &str, kind: &str) -> Vec<Value> {
    api.list_objects(api_version, kind, Some("default"), &ListOptions::default())
        .unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn machines_of(api: &ApiServer, cluster: &str) -> Vec<Value> {
    list(api, CAPI, "Machine")
        .into_iter()
        .filter(|m| m["spec"]["clusterName"] == cluster)
        .collect()
}

fn running(machines: &[Value]) -> usize {
    machines
        .iter()
        .filter(|m| m["status"]["phase"] == "Running")
        .count()
}

async fn kube_client_from_secret(api: &ApiServer, cluster: &str) -> kube::Client {
    let secret = api
        .get_object(
            "v1",
            "Secret",
            Some("default"),
            &format!("{cluster}-kubeconfig"),
        )
        .unwrap();
    assert_eq!(secret["type"], "cluster.x-k8s.io/secret");
    assert_eq!(
        secret["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
        cluster
    );
    let yaml = String::from_utf8(
        STANDARD
            .decode(secret["data"]["value"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[test]
fn trimmed_crds_match_upstream() {
    let upstream_root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/crds");
    let mut upstream_files = Vec::new();
    for dir in std::fs::read_dir(&upstream_root).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            upstream_files.push(f.unwrap().path());
        }
    }
    assert_eq!(
        upstream_files.len(),
        providers::CRDS.len(),
        "every upstream CRD is bundled"
    );
    for (file, text) in providers::CRDS {
        let ours: Value = serde_saphyr::from_str(text).unwrap();
        let path = upstream_files
            .iter()
            .find(|p| p.file_name().unwrap().to_str() == Some(file))
            .unwrap_or_else(|| panic!("no upstream file for {file}"));
        let theirs: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            ours["metadata"]["name"], theirs["metadata"]["name"],
            "{file}"
        );
        for field in ["group", "names", "scope"] {
            assert_eq!(
                ours["spec"][field], theirs["spec"][field],
                "{file}: spec.{field}"
            );
        }
        let ours_versions = ours["spec"]["versions"].as_array().unwrap();
        assert_eq!(ours_versions.len(), 1, "{file}: only the storage version");
        let v = &ours_versions[0];
        let upstream = theirs["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["storage"] == true)
            .unwrap();
        assert_eq!(v["name"], upstream["name"], "{file}");
        assert_eq!(v["served"], true, "{file}");
        // An empty `subresources: {}` upstream means none.
        let upstream_sub = Some(&upstream["subresources"])
            .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(v["subresources"], upstream_sub, "{file}: subresources");
        assert_eq!(
            v["additionalPrinterColumns"], upstream["additionalPrinterColumns"],
            "{file}: printer columns"
        );
        assert_eq!(
            v["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_are_installed_in_the_management_cluster() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    for (ns, name) in [
        ("capi-system", "cluster-api"),
        ("capi-kubeadm-bootstrap-system", "bootstrap-kubeadm"),
        ("capi-kubeadm-control-plane-system", "control-plane-kubeadm"),
        ("capv-system", "infrastructure-vsphere"),
    ] {
        let p = api
            .get_object(
                "clusterctl.cluster.x-k8s.io/v1alpha3",
                "Provider",
                Some(ns),
                name,
            )
            .unwrap();
        assert!(p["version"].as_str().unwrap().starts_with('v'));
    }
    assert_eq!(providers::observe(&api).len(), 4);
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_cluster_comes_up_with_a_working_kubeconfig() {
    let (world, dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, "single-node", false);
    wait_for("CP-A Running", || {
        (running(&machines_of(&api, "single-node")) == 1).then_some(())
    })
    .await;
    let m = &machines_of(&api, "single-node")[0];
    assert!(
        m["spec"]["providerID"]
            .as_str()
            .unwrap()
            .starts_with("vsphere://")
    );
    for suffix in ["ca", "etcd", "sa", "proxy", "kubeconfig"] {
        api.get_object(
            "v1",
            "Secret",
            Some("default"),
            &format!("single-node-{suffix}"),
        )
        .unwrap();
    }
    assert!(
        dir.path()
            .join("clusters/default/single-node/kubeconfig")
            .exists()
    );

    let client = kube_client_from_secret(&api, "single-node").await;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let node = &list.items[0];
    assert!(
        node.metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("node-role.kubernetes.io/control-plane")
    );
    assert_eq!(
        node.spec.as_ref().unwrap().provider_id,
        m["spec"]["providerID"].as_str().map(str::to_owned)
    );
    let ready = node
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready);

    let cluster = wait_for("Cluster Available", || {
        let c = api
            .get_object(CAPI, "Cluster", Some("default"), "single-node")
            .unwrap();
        (c["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Available" && c["status"] == "True"))
        .then_some(c)
    })
    .await;
    assert_eq!(cluster["status"]["phase"], "Provisioned");
    assert_eq!(
        cluster["status"]["initialization"]["controlPlaneInitialized"],
        true
    );
    assert_eq!(
        cluster["spec"]["controlPlaneEndpoint"]["host"],
        "10.20.0.10"
    );
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcp_scales_up_one_machine_at_a_time() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, "cp3", false);
    wait_for("CP-A Running", || {
        (running(&machines_of(&api, "cp3")) == 1).then_some(())
    })
    .await;

    // Watch Machines from now on: whenever one is added, every other must already have a Node.
    let mut stream = api
        .watch_objects(CAPI, "Machine", Some("default"), &WatchOptions::default())
        .unwrap();
    let kcp_name = "cp3-control-plane";
    let mut kcp = api
        .get_object(KCP, "KubeadmControlPlane", Some("default"), kcp_name)
        .unwrap();
    kcp["apiVersion"] = json!(KCP);
    kcp["kind"] = json!("KubeadmControlPlane");
    kcp["spec"]["replicas"] = json!(3);
    api.update_object(kcp).unwrap();

    let mut latest: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
    let mut added_order = Vec::new();
    let start = Instant::now();
    while running(&latest.values().cloned().collect::<Vec<_>>()) < 3 {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for 3 running machines"
        );
        let ev = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .unwrap()
            .unwrap();
        let name = ev.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if ev.kind == "ADDED" && !latest.contains_key(&name) && !latest.is_empty() {
            for (other, m) in &latest {
                assert!(
                    !m["status"]["nodeRef"].is_null(),
                    "{name} was created while {other} had no Node yet"
                );
            }
            added_order.push(name.clone());
        }
        if ev.kind == "ADDED" && latest.is_empty() {
            // The initial list.
        }
        if ev.kind == "DELETED" {
            latest.remove(&name);
        } else if ev.kind == "ADDED" || ev.kind == "MODIFIED" {
            latest.insert(name, ev.object);
        }
    }
    assert_eq!(added_order.len(), 2, "two machines joined: {added_order:?}");
    let wc = world.workload_cluster("default", "cp3").unwrap();
    let nodes = wc
        .api()
        .list_objects("v1", "Node", None, &ListOptions::default())
        .unwrap();
    assert_eq!(nodes["items"].as_array().unwrap().len(), 3);
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_reconciliation() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, "paused", true);
    apply_cluster(&api, "active", false);
    // The active cluster proves passes ran; the paused one must not have moved.
    wait_for("active CP Running", || {
        (running(&machines_of(&api, "active")) == 1).then_some(())
    })
    .await;
    assert!(machines_of(&api, "paused").is_empty());
    let c = api
        .get_object(CAPI, "Cluster", Some("default"), "paused")
        .unwrap();
    assert!(
        c["status"]["phase"].is_null(),
        "paused Cluster got status {}",
        c["status"]
    );

    let mut c = c;
    c["apiVersion"] = json!(CAPI);
    c["kind"] = json!("Cluster");
    c["spec"]["paused"] = json!(false);
    api.update_object(c).unwrap();
    wait_for("unpaused CP Running", || {
        (running(&machines_of(&api, "paused")) == 1).then_some(())
    })
    .await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_provider_deployment_stops_its_controllers() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    let ns = "capi-kubeadm-control-plane-system";
    let dep_name = "capi-kubeadm-control-plane-controller-manager";
    let mut deployment = api
        .get_object("apps/v1", "Deployment", Some(ns), dep_name)
        .unwrap();
    api.delete_object(
        "apps/v1",
        "Deployment",
        Some(ns),
        dep_name,
        &DeleteOptions::default(),
    )
    .unwrap();
    wait_for("the KCP controllers to stop", || {
        (!world
            .running_providers("management")
            .contains(&providers::Provider::KubeadmControlPlane))
        .then_some(())
    })
    .await;
    apply_cluster(&api, "nokcp", false);
    // Core and vSphere still run: the Cluster gets provisioned, but no control plane appears.
    wait_for("Cluster Provisioned", || {
        let c = api
            .get_object(CAPI, "Cluster", Some("default"), "nokcp")
            .unwrap();
        (c["status"]["phase"] == "Provisioned").then_some(())
    })
    .await;
    let kcp = api
        .get_object(
            KCP,
            "KubeadmControlPlane",
            Some("default"),
            "nokcp-control-plane",
        )
        .unwrap();
    assert!(
        kcp["status"].is_null() || kcp["status"]["replicas"].is_null(),
        "status {}",
        kcp["status"]
    );
    assert!(machines_of(&api, "nokcp").is_empty());

    // Reinstalling the provider starts its controllers again.
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        deployment["metadata"]
            .as_object_mut()
            .unwrap()
            .remove(field);
    }
    deployment["apiVersion"] = json!("apps/v1");
    deployment["kind"] = json!("Deployment");
    let created = api.create_object(deployment).unwrap();
    let mut created = created;
    created["apiVersion"] = json!("apps/v1");
    created["kind"] = json!("Deployment");
    providers::mark_available(&api, created).unwrap();
    wait_for("CP Running", || {
        (running(&machines_of(&api, "nokcp")) == 1).then_some(())
    })
    .await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_cluster_deletes_everything() {
    let (world, dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, "doomed", false);
    wait_for("CP Running", || {
        (running(&machines_of(&api, "doomed")) == 1).then_some(())
    })
    .await;
    assert!(world.workload_cluster("default", "doomed").is_some());
    api.delete_object(
        CAPI,
        "Cluster",
        Some("default"),
        "doomed",
        &DeleteOptions::default(),
    )
    .unwrap();
    wait_for("Cluster gone", || {
        api.get_object(CAPI, "Cluster", Some("default"), "doomed")
            .err()
            .filter(|e| e.is_not_found())
    })
    .await;
    assert!(machines_of(&api, "doomed").is_empty());
    assert!(list(&api, "infrastructure.cluster.x-k8s.io/v1beta2", "VSphereVM").is_empty());
    assert!(list(&api, KCP, "KubeadmControlPlane").is_empty());
    assert!(world.vcenter().vms_snapshot().is_empty(), "VMs destroyed");
    assert!(world.workload_cluster("default", "doomed").is_none());
    wait_for("kubeconfig file removed", || {
        (!dir
            .path()
            .join("clusters/default/doomed/kubeconfig")
            .exists())
        .then_some(())
    })
    .await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_secret_works_with_kubectl() {
    let kubectl = std::path::Path::new("/usr/bin/kubectl");
    assert!(
        kubectl.exists(),
        "/usr/bin/kubectl is missing: this test runs the real kubectl against the workload cluster"
    );
    let (world, dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, "kubectl-sn", false);
    wait_for("CP-A Running", || {
        (running(&machines_of(&api, "kubectl-sn")) == 1).then_some(())
    })
    .await;
    let secret = api
        .get_object("v1", "Secret", Some("default"), "kubectl-sn-kubeconfig")
        .unwrap();
    let kubeconfig = STANDARD
        .decode(secret["data"]["value"].as_str().unwrap())
        .unwrap();
    let file = dir.path().join("kubectl-sn.kubeconfig");
    std::fs::write(&file, kubeconfig).unwrap();

    // The Node may still be registering when the Machine turns Running: poll kubectl itself.
    let start = Instant::now();
    let node = loop {
        let file = file.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(&file)
                .args(["get", "nodes", "-o", "json"])
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            output.status.success(),
            "kubectl get nodes failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let list: Value = serde_json::from_slice(&output.stdout).unwrap();
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let ready = |n: &Value| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        };
        if items.len() == 1 && ready(&items[0]) {
            break items[0].clone();
        }
        assert!(items.len() <= 1, "more than one node: {items:?}");
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for one Ready node through kubectl: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        node["metadata"]["labels"]
            .as_object()
            .unwrap()
            .contains_key("node-role.kubernetes.io/control-plane"),
        "node has the control-plane role: {node}"
    );
    world.shutdown().await;
}
