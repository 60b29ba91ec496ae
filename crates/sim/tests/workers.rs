//! Workers and add-ons in the world, driven with plain objects rendered by `fledge-core`:
//! MachineDeployments create hash-named MachineSets and labelled worker Nodes, scale and roll,
//! MachineHealthChecks replace Machines whose Node is NotReady, and the Flux stand-in installs
//! HelmReleases (or fails them through the fault knob). Every wait polls with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fledge_core::render::{Phase, render};
use fledge_core::spec::WorkloadCluster;
use fledge_sim::clock::Speed;
use fledge_sim::world::{World, WorldConfig};
use kube_sim::ApiServer;
use kube_sim::api_server::ListOptions;
use serde_json::{Value, json};

const EDGE: &str = include_str!("../../../examples/edge-1.yaml");
const CAPI: &str = "cluster.x-k8s.io/v1beta2";
const INFRA: &str = "infrastructure.cluster.x-k8s.io/v1beta2";
const NS: &str = "team-a";
const CLUSTER: &str = "edge-1";
const MD: &str = "edge-1-general";
const DEADLINE: Duration = Duration::from_secs(120);

async fn start_world() -> (Arc<World>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = WorldConfig::new(dir.path());
    // Fast, but slow enough that MachineHealthCheck timeouts (600 s / 300 s realistic:
    // 6 s / 3 s here) do not fire spuriously on a loaded 2-core CI machine.
    config.speed = Speed(100.0);
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

/// `examples/edge-1.yaml` trimmed for speed: one control-plane Machine and only the
/// `general` pool (with `replicas` workers), rendered for the full phase.
fn rendered(replicas: u32) -> Vec<Value> {
    let first = EDGE.split("\n---\n").next().unwrap();
    let mut doc: Value = serde_saphyr::from_str(first).unwrap();
    doc["spec"]["controlPlane"]["replicas"] = json!(1);
    let general = doc["spec"]["workers"][0].clone();
    assert_eq!(general["name"], "general");
    doc["spec"]["workers"] = json!([general]);
    doc["spec"]["workers"][0]["replicas"] = json!(replicas);
    doc["spec"]["workers"][0]["taints"] =
        json!([{"key": "fledge.dev/general", "value": "true", "effect": "PreferNoSchedule"}]);
    let cluster: WorkloadCluster = serde_json::from_value(doc).unwrap();
    render(&cluster, Phase::Full)
        .unwrap()
        .into_iter()
        .filter(|o| o["metadata"]["namespace"] == NS)
        .collect()
}

fn apply_cluster(api: &ApiServer, replicas: u32) {
    api.create_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    api.create_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vsphere-credentials", "namespace": NS},
        "data": {"username": STANDARD.encode("admin"), "password": STANDARD.encode("secret")},
    }))
    .unwrap();
    let objs = rendered(replicas);
    assert!(objs.iter().any(|o| o["kind"] == "MachineDeployment"));
    for obj in objs {
        api.create_object(obj.clone()).unwrap_or_else(|e| {
            panic!("creating {} {}: {e}", obj["kind"], obj["metadata"]["name"])
        });
    }
}

fn list(api: &ApiServer, api_version: &str, kind: &str, ns: Option<&str>) -> Vec<Value> {
    api.list_objects(api_version, kind, ns, &ListOptions::default())
        .map(|l| l["items"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn workers(api: &ApiServer) -> Vec<Value> {
    list(api, CAPI, "Machine", Some(NS))
        .into_iter()
        .filter(|m| m["metadata"]["labels"]["cluster.x-k8s.io/deployment-name"] == MD)
        .collect()
}

fn all_running(machines: &[Value], n: usize) -> bool {
    machines.len() == n
        && machines.iter().all(|m| {
            m["status"]["phase"] == "Running" && m["metadata"]["deletionTimestamp"].is_null()
        })
}

fn worker_nodes(world: &World) -> Vec<Value> {
    world
        .workload_cluster(NS, CLUSTER)
        .map(|wc| {
            list(&wc.api(), "v1", "Node", None)
                .into_iter()
                .filter(|n| {
                    n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"].is_null()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn get(api: &ApiServer, api_version: &str, kind: &str, name: &str) -> Value {
    let mut o = api.get_object(api_version, kind, Some(NS), name).unwrap();
    o["apiVersion"] = json!(api_version);
    o["kind"] = json!(kind);
    o
}

fn cond<'a>(o: &'a Value, t: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

/// Updates an object with `f`, retrying on conflicts.
fn update(api: &ApiServer, api_version: &str, kind: &str, name: &str, f: impl Fn(&mut Value)) {
    for _ in 0..50 {
        let mut o = get(api, api_version, kind, name);
        f(&mut o);
        match api.update_object(o) {
            Ok(_) => return,
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("updating {kind} {name}: {e}"),
        }
    }
    panic!("updating {kind} {name}: too many conflicts");
}

fn scale(api: &ApiServer, replicas: i64) {
    update(api, CAPI, "MachineDeployment", MD, |md| {
        md["spec"]["replicas"] = json!(replicas);
    });
}

async fn wait_workers_running(world: &World, api: &ApiServer, n: usize) -> Vec<Value> {
    let machines = wait_for(&format!("{n} running workers"), || {
        let ms = workers(api);
        all_running(&ms, n).then_some(ms)
    })
    .await;
    wait_for(
        &format!("{n} ready worker nodes with the pool label"),
        || {
            let nodes = worker_nodes(world);
            (nodes.len() == n
                && nodes.iter().all(|n| {
                    n["metadata"]["labels"]["tier"] == "general"
                        && n["spec"]["taints"]
                            .as_array()
                            .is_some_and(|t| t.iter().any(|t| t["key"] == "fledge.dev/general"))
                        && n["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                }))
            .then_some(())
        },
    )
    .await;
    wait_for(
        &format!("MachineDeployment status of {n} ready replicas"),
        || {
            let md = get(api, CAPI, "MachineDeployment", MD);
            (md["status"]["replicas"] == n
                && md["status"]["readyReplicas"] == n
                && md["status"]["upToDateReplicas"] == n
                && md["status"]["phase"] == "Running")
                .then_some(())
        },
    )
    .await;
    machines
}

fn machine_sets(api: &ApiServer) -> Vec<Value> {
    list(api, CAPI, "MachineSet", Some(NS))
        .into_iter()
        .filter(|m| m["metadata"]["labels"]["cluster.x-k8s.io/deployment-name"] == MD)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_deployment_creates_a_hash_named_set_and_scales() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, 3);
    let machines = wait_workers_running(&world, &api, 3).await;
    let pool_template = get(&api, CAPI, "MachineDeployment", MD)["spec"]["template"]["spec"]
        ["infrastructureRef"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let sets = machine_sets(&api);
    assert_eq!(sets.len(), 1, "one MachineSet");
    let set_name = sets[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let hash = set_name.strip_prefix(&format!("{MD}-")).unwrap();
    assert!(!hash.is_empty());
    assert_eq!(sets[0]["metadata"]["labels"]["machine-template-hash"], hash);
    for m in &machines {
        assert_eq!(
            m["metadata"]["labels"]["cluster.x-k8s.io/set-name"],
            set_name.as_str()
        );
        let owner = &m["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str()),
            (Some("MachineSet"), Some(set_name.as_str()))
        );
        // The bootstrap config and infrastructure were cloned from the pool's templates.
        let config = get(
            &api,
            "bootstrap.cluster.x-k8s.io/v1beta2",
            "KubeadmConfig",
            m["metadata"]["name"].as_str().unwrap(),
        );
        assert!(config["spec"]["joinConfiguration"].is_object());
        let vm = get(
            &api,
            INFRA,
            "VSphereMachine",
            m["metadata"]["name"].as_str().unwrap(),
        );
        assert_eq!(
            vm["metadata"]["annotations"]["cluster.x-k8s.io/cloned-from-name"],
            pool_template.as_str()
        );
    }
    let md = get(&api, CAPI, "MachineDeployment", MD);
    assert_eq!(cond(&md, "Available").unwrap()["status"], "True");
    assert_eq!(cond(&md, "MachinesReady").unwrap()["status"], "True");
    assert_eq!(cond(&md, "RollingOut").unwrap()["status"], "False");

    scale(&api, 5);
    wait_workers_running(&world, &api, 5).await;
    assert_eq!(machine_sets(&api).len(), 1, "scaling keeps the MachineSet");

    scale(&api, 1);
    wait_workers_running(&world, &api, 1).await;
    wait_for("the removed workers' Nodes to go", || {
        (worker_nodes(&world).len() == 1).then_some(())
    })
    .await;
    assert_eq!(machine_sets(&api)[0]["metadata"]["name"], set_name.as_str());
    let last = workers(&api)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();

    // `rollout.after` (whole seconds, like creation timestamps) replaces older Machines.
    let after = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    update(&api, CAPI, "MachineDeployment", MD, |md| {
        md["spec"]["rollout"]["after"] = json!(after);
    });
    wait_for("rollout.after to replace the machine", || {
        let ms = workers(&api);
        let sets = machine_sets(&api);
        (all_running(&ms, 1)
            && ms[0]["metadata"]["name"] != last.as_str()
            && sets.len() == 1
            && sets[0]["metadata"]["name"] != set_name.as_str())
        .then_some(())
    })
    .await;
    let now = workers(&api);
    assert!(now[0]["metadata"]["creationTimestamp"].as_str().unwrap() >= after.as_str());
    wait_workers_running(&world, &api, 1).await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_strategy_replaces_only_deleted_machines() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, 2);
    let before = wait_workers_running(&world, &api, 2).await;
    let old_set = machine_sets(&api)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    update(&api, CAPI, "MachineDeployment", MD, |md| {
        md["spec"]["rollout"]["strategy"] = json!({"type": "OnDelete"});
        md["spec"]["template"]["spec"]["version"] = json!("v1.32.5");
    });
    let new_set = wait_for("a new, empty MachineSet", || {
        machine_sets(&api)
            .into_iter()
            .find(|s| s["metadata"]["name"] != old_set.as_str())
    })
    .await;
    assert_eq!(new_set["spec"]["replicas"], 0, "OnDelete does not surge");
    assert_eq!(workers(&api).len(), 2);
    let victim = before[0]["metadata"]["name"].as_str().unwrap().to_owned();
    api.delete_object(CAPI, "Machine", Some(NS), &victim, &Default::default())
        .unwrap();
    wait_for("the deleted machine's replacement from the new set", || {
        let ms = workers(&api);
        let new = ms
            .iter()
            .filter(|m| {
                m["metadata"]["labels"]["cluster.x-k8s.io/set-name"] == new_set["metadata"]["name"]
            })
            .count();
        (all_running(&ms, 2)
            && new == 1
            && !ms.iter().any(|m| m["metadata"]["name"] == victim.as_str()))
        .then_some(())
    })
    .await;
    // The other old Machine stays until someone deletes it.
    assert!(
        workers(&api)
            .iter()
            .any(|m| m["metadata"]["name"] == before[1]["metadata"]["name"])
    );
    let md = get(&api, CAPI, "MachineDeployment", MD);
    assert_eq!(cond(&md, "RollingOut").unwrap()["status"], "True");
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_infrastructure_template_rolls_the_workers() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, 2);
    let before = wait_workers_running(&world, &api, 2).await;
    let old_set = machine_sets(&api)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let md = get(&api, CAPI, "MachineDeployment", MD);
    let old_template = md["spec"]["template"]["spec"]["infrastructureRef"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut template = get(&api, INFRA, "VSphereMachineTemplate", &old_template);
    let new_template = format!("{MD}-v2");
    template["metadata"] = json!({"name": new_template, "namespace": NS});
    template["spec"]["template"]["spec"]["memoryMiB"] = json!(24576);
    api.create_object(template).unwrap();
    update(&api, CAPI, "MachineDeployment", MD, |md| {
        md["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!(new_template);
    });
    let new_set = wait_for("a new MachineSet", || {
        machine_sets(&api)
            .into_iter()
            .find(|s| s["metadata"]["name"] != old_set.as_str())
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
    })
    .await;
    wait_for("the rollout to finish", || {
        let ms = workers(&api);
        let done = all_running(&ms, 2)
            && ms
                .iter()
                .all(|m| m["metadata"]["labels"]["cluster.x-k8s.io/set-name"] == new_set.as_str())
            && machine_sets(&api).len() == 1;
        done.then_some(())
    })
    .await;
    let after = wait_workers_running(&world, &api, 2).await;
    for old in &before {
        assert!(
            !after
                .iter()
                .any(|m| m["metadata"]["name"] == old["metadata"]["name"]),
            "old machine {} replaced",
            old["metadata"]["name"]
        );
    }
    for m in &after {
        let vm = get(
            &api,
            INFRA,
            "VSphereMachine",
            m["metadata"]["name"].as_str().unwrap(),
        );
        assert_eq!(
            vm["metadata"]["annotations"]["cluster.x-k8s.io/cloned-from-name"],
            new_template.as_str()
        );
        assert_eq!(vm["spec"]["memoryMiB"], 24576);
    }
    wait_for("RollingOut=False", || {
        let md = get(&api, CAPI, "MachineDeployment", MD);
        (cond(&md, "RollingOut").unwrap()["status"] == "False"
            && cond(&md, "MachinesUpToDate").unwrap()["status"] == "True")
            .then_some(())
    })
    .await;
    assert_eq!(
        get(&api, CAPI, "MachineDeployment", MD)["status"]["upToDateReplicas"],
        2
    );
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_replaces_a_worker_whose_node_is_not_ready() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, 3);
    let before = wait_workers_running(&world, &api, 3).await;
    wait_for("the MachineHealthCheck to count 3 healthy machines", || {
        let mhc = get(&api, CAPI, "MachineHealthCheck", MD);
        (mhc["status"]["expectedMachines"] == 3 && mhc["status"]["currentHealthy"] == 3)
            .then_some(())
    })
    .await;
    let victim = before[0].clone();
    let victim_name = victim["metadata"]["name"].as_str().unwrap().to_owned();
    let node_name = victim["status"]["nodeRef"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    // The node's kubelet reports NotReady (fault knob: heartbeats stop asserting Ready).
    world.set_node_not_ready(NS, CLUSTER, &node_name).unwrap();
    wait_for("the unhealthy machine to be remediated", || {
        let gone = api
            .get_object(CAPI, "Machine", Some(NS), &victim_name)
            .map_or(true, |m| {
                !m["metadata"]["deletionTimestamp"].is_null()
                    && m["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "HealthCheckSucceeded" && c["status"] == "False")
                    })
            });
        gone.then_some(())
    })
    .await;
    let after = wait_workers_running(&world, &api, 3).await;
    assert!(
        !after
            .iter()
            .any(|m| m["metadata"]["name"] == victim_name.as_str())
    );
    wait_for(
        "the MachineHealthCheck to count 3 healthy machines again",
        || {
            let mhc = get(&api, CAPI, "MachineHealthCheck", MD);
            (mhc["status"]["currentHealthy"] == 3
                && mhc["status"]["remediationsAllowed"] == 1
                && cond(&mhc, "RemediationAllowed").is_some_and(|c| c["status"] == "True"))
            .then_some(())
        },
    )
    .await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_replaces_a_worker_whose_vm_was_deleted() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, 3);
    let before = wait_workers_running(&world, &api, 3).await;
    let victim = before[1]["metadata"]["name"].as_str().unwrap().to_owned();
    let node = before[1]["status"]["nodeRef"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    world.delete_node_vm(NS, CLUSTER, &node).unwrap();
    wait_for("the machine of the lost VM to be replaced", || {
        let ms = workers(&api);
        (all_running(&ms, 3) && !ms.iter().any(|m| m["metadata"]["name"] == victim.as_str()))
            .then_some(())
    })
    .await;
    wait_workers_running(&world, &api, 3).await;
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_holds_off_when_too_many_machines_are_unhealthy() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    apply_cluster(&api, 3);
    let before = wait_workers_running(&world, &api, 3).await;
    // The pool's check allows remediation while at most 40% (1 of 3) is unhealthy.
    let nodes: Vec<String> = before[..2]
        .iter()
        .map(|m| m["status"]["nodeRef"]["name"].as_str().unwrap().to_owned())
        .collect();
    // Both must count as unhealthy at once: hold the check while their NotReady timeouts
    // (3 s at this speed; timestamps have whole seconds) pass.
    update(&api, CAPI, "MachineHealthCheck", MD, |mhc| {
        mhc["metadata"]["annotations"]["cluster.x-k8s.io/paused"] = json!("");
    });
    for n in &nodes {
        world.set_node_not_ready(NS, CLUSTER, n).unwrap();
    }
    let wc = world.workload_cluster(NS, CLUSTER).unwrap().api();
    wait_for(
        "both nodes to be NotReady for longer than the timeout",
        || {
            nodes
                .iter()
                .all(|n| {
                    let node = wc.get_object("v1", "Node", None, n).unwrap();
                    cond(&node, "Ready").is_some_and(|c| {
                        let since = chrono::DateTime::parse_from_rfc3339(
                            c["lastTransitionTime"].as_str().unwrap(),
                        )
                        .unwrap();
                        c["status"] != "True"
                            && chrono::Utc::now() - since.to_utc() > chrono::Duration::seconds(2)
                    })
                })
                .then_some(())
        },
    )
    .await;
    update(&api, CAPI, "MachineHealthCheck", MD, |mhc| {
        mhc["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("cluster.x-k8s.io/paused");
    });
    let mhc = wait_for("remediation to be short-circuited", || {
        let mhc = get(&api, CAPI, "MachineHealthCheck", MD);
        (mhc["status"]["currentHealthy"] == 1
            && cond(&mhc, "RemediationAllowed").is_some_and(|c| c["status"] == "False"))
        .then_some(mhc)
    })
    .await;
    assert_eq!(mhc["status"]["expectedMachines"], 3);
    assert_eq!(mhc["status"]["remediationsAllowed"], 0);
    wait_for("both unhealthy machines to be marked", || {
        let marked = before[..2].iter().all(|m| {
            let m = get(
                &api,
                CAPI,
                "Machine",
                m["metadata"]["name"].as_str().unwrap(),
            );
            m["metadata"]["deletionTimestamp"].is_null()
                && cond(&m, "HealthCheckSucceeded").is_some_and(|c| c["status"] == "False")
        });
        marked.then_some(())
    })
    .await;
    // One recovers: the other is now within the limit and gets replaced.
    world.set_node_ready(NS, CLUSTER, &nodes[0]).unwrap();
    let second = before[1]["metadata"]["name"].as_str().unwrap().to_owned();
    wait_for("the remaining unhealthy machine to be replaced", || {
        let ms = workers(&api);
        (all_running(&ms, 3)
            && !ms.iter().any(|m| m["metadata"]["name"] == second.as_str())
            && ms
                .iter()
                .any(|m| m["metadata"]["name"] == before[0]["metadata"]["name"]))
        .then_some(())
    })
    .await;
    world.shutdown().await;
}

/// Installs Flux's helm-controller in the management cluster and marks it available (the
/// management cluster has no node runtime).
fn install_helm_controller(api: &ApiServer) {
    api.create_object(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}),
    )
    .unwrap();
    let mut d = api
        .create_object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "helm-controller", "namespace": "flux-system"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "helm-controller"}},
                "template": {
                    "metadata": {"labels": {"app": "helm-controller"}},
                    "spec": {"containers": [{"name": "manager", "image": "ghcr.io/fluxcd/helm-controller:v1.3.0"}]},
                },
            },
        }))
        .unwrap();
    d["apiVersion"] = json!("apps/v1");
    d["kind"] = json!("Deployment");
    d["status"] = json!({
        "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
    });
    api.update_object_status(d).unwrap();
}

fn helm_release(name: &str, chart: &str, source: &str) -> Value {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "releaseName": name,
            "targetNamespace": name,
            "install": {"createNamespace": true},
            "chart": {"spec": {
                "chart": chart, "version": "1.2.3",
                "sourceRef": {"kind": "HelmRepository", "name": source},
            }},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_releases_install_from_ready_sources_or_fail_by_fault() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    install_helm_controller(&api);
    world.fail_helm_chart("broken-chart");
    api.create_object(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
        "metadata": {"name": "charts", "namespace": "flux-system"},
        "spec": {"url": "https://charts.example.com", "interval": "1h"},
    }))
    .unwrap();
    for hr in [
        helm_release("good", "podinfo", "charts"),
        helm_release("bad", "broken-chart", "charts"),
        helm_release("orphan", "podinfo", "missing"),
    ] {
        api.create_object(hr).unwrap();
    }
    let get_hr = |name: &str| {
        api.get_object(
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            Some("flux-system"),
            name,
        )
        .unwrap()
    };
    let repo = wait_for("the HelmRepository to be Ready", || {
        let r = api
            .get_object(
                "source.toolkit.fluxcd.io/v1",
                "HelmRepository",
                Some("flux-system"),
                "charts",
            )
            .unwrap();
        cond(&r, "Ready")
            .is_some_and(|c| c["status"] == "True")
            .then_some(r)
    })
    .await;
    assert!(
        repo["status"]["artifact"]["revision"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let good = wait_for("the good release to be Ready", || {
        let hr = get_hr("good");
        cond(&hr, "Ready")
            .is_some_and(|c| c["status"] == "True")
            .then_some(hr)
    })
    .await;
    assert_eq!(cond(&good, "Released").unwrap()["status"], "True");
    assert_eq!(cond(&good, "Ready").unwrap()["reason"], "InstallSucceeded");
    assert_eq!(good["status"]["lastAttemptedRevision"], "1.2.3");
    assert_eq!(good["status"]["history"][0]["status"], "deployed");
    assert_eq!(good["status"]["history"][0]["chartName"], "podinfo");
    assert_eq!(good["status"]["history"][0]["version"], 1);
    assert!(
        api.get_object("v1", "Namespace", None, "good").is_ok(),
        "createNamespace"
    );
    let bad = wait_for("the faulty release to fail", || {
        let hr = get_hr("bad");
        cond(&hr, "Ready")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "InstallFailed")
            .then_some(hr)
    })
    .await;
    assert_eq!(bad["status"]["history"][0]["status"], "failed");
    let orphan = get_hr("orphan");
    assert_eq!(cond(&orphan, "Ready").unwrap()["status"], "False");
    assert_eq!(cond(&orphan, "Ready").unwrap()["reason"], "ArtifactFailed");

    // Healing the fault lets the next attempt succeed.
    world.heal_helm_chart("broken-chart");
    wait_for("the healed release to be Ready", || {
        let hr = get_hr("bad");
        cond(&hr, "Ready")
            .is_some_and(|c| c["status"] == "True")
            .then_some(())
    })
    .await;
    world.shutdown().await;
}
