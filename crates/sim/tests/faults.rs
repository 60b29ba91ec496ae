//! The fault knobs, in-process against a fast [`World`] and through the admin endpoint of the
//! real `fledge-sim` binary. Every wait polls with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fledge_core::render::{Phase, render};
use fledge_core::spec::WorkloadCluster;
use fledge_sim::clock::Speed;
use fledge_sim::faults::{AdminServer, FaultError};
use fledge_sim::world::{World, WorldConfig};
use kube_sim::ApiServer;
use kube_sim::api_server::ListOptions;
use serde_json::{Value, json};

const SINGLE_NODE: &str = include_str!("../../../examples/single-node.yaml");
const CAPI: &str = "cluster.x-k8s.io/v1beta2";
const KCP: &str = "controlplane.cluster.x-k8s.io/v1beta2";
const INFRA: &str = "infrastructure.cluster.x-k8s.io/v1beta2";
const DEADLINE: Duration = Duration::from_secs(90);

/// An agent that reports its network file and then waits to be killed.
const AGENT: &str = "#!/bin/sh\necho \"network-file=$FLEDGE_SIM_NETWORK_FILE\"\nexec sleep 600\n";

async fn start_world() -> (Arc<World>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let agent_bin = dir.path().join("agent.sh");
    std::fs::write(&agent_bin, AGENT).unwrap();
    let mut perms = std::fs::metadata(&agent_bin).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&agent_bin, perms).unwrap();
    let mut config = WorldConfig::new(dir.path());
    config.speed = Speed(400.0);
    config.agent_bin = agent_bin;
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

fn apply_cluster(api: &ApiServer, name: &str) {
    let _ = api.create_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vsphere-credentials", "namespace": "default"},
        "data": {"username": STANDARD.encode("admin"), "password": STANDARD.encode("secret")},
    }));
    let mut doc: Value = serde_saphyr::from_str(SINGLE_NODE).unwrap();
    doc["metadata"]["name"] = json!(name);
    let cluster: WorkloadCluster = serde_json::from_value(doc).unwrap();
    for obj in render(&cluster, Phase::Bootstrap).unwrap() {
        api.create_object(obj.clone()).unwrap_or_else(|e| {
            panic!("creating {} {}: {e}", obj["kind"], obj["metadata"]["name"])
        });
    }
}

fn list(api: &ApiServer, api_version: &str, kind: &str) -> Vec<Value> {
    api.list_objects(api_version, kind, None, &ListOptions::default())
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

fn condition<'a>(o: &'a Value, type_: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Brings cluster `name` up; returns the name of its (single) Node.
async fn running_cluster(world: &World, name: &str) -> String {
    let api = world.management().api();
    apply_cluster(&api, name);
    wait_for("the control-plane Machine to run", || {
        machines_of(&api, name)
            .into_iter()
            .find(|m| m["status"]["phase"] == "Running")
            .and_then(|m| m["status"]["nodeRef"]["name"].as_str().map(str::to_owned))
    })
    .await
}

fn node_condition(world: &World, cluster: &str, node: &str, type_: &str) -> Option<Value> {
    let wc = world.workload_cluster("default", cluster)?;
    let n = wc.api().get_object("v1", "Node", None, node).ok()?;
    condition(&n, type_).cloned()
}

fn node_ready(world: &World, cluster: &str, node: &str) -> Option<Value> {
    node_condition(world, cluster, node, "Ready")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_clones_surface_as_conditions_and_recover() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    // Clones keep failing until the knob is turned back to zero.
    world.fail_next_clones("default", "flaky", 1_000);
    apply_cluster(&api, "flaky");
    let failed = wait_for("VSphereVM reporting the failed clone", || {
        list(&api, INFRA, "VSphereVM").into_iter().find_map(|vm| {
            condition(&vm, "VirtualMachineProvisioned")
                .filter(|c| c["reason"] == "CloningFailed")
                .cloned()
        })
    })
    .await;
    assert_eq!(failed["status"], "False");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("simulated vCenter fault")
    );
    let machine = wait_for("the Machine to wait for its infrastructure", || {
        machines_of(&api, "flaky")
            .into_iter()
            .find(|m| condition(m, "InfrastructureReady").is_some_and(|c| c["status"] == "False"))
    })
    .await;
    assert_ne!(machine["status"]["phase"], "Running");
    // The controller retries; once clones work again the Machine runs.
    world.fail_next_clones("default", "flaky", 0);
    running_cluster_existing(&world, "flaky").await;
    let vm = &list(&api, INFRA, "VSphereVM")[0];
    assert_eq!(
        condition(vm, "VirtualMachineProvisioned").unwrap()["status"],
        "True"
    );
    world.shutdown().await;
}

/// Waits for the already applied cluster `name` to run.
async fn running_cluster_existing(world: &World, name: &str) {
    let api = world.management().api();
    wait_for("the control-plane Machine to run", || {
        machines_of(&api, name)
            .into_iter()
            .find(|m| m["status"]["phase"] == "Running")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_not_ready_and_back() {
    let (world, _dir) = start_world().await;
    let node = running_cluster(&world, "sick").await;
    let first = node_ready(&world, "sick", &node).unwrap();
    assert_eq!(first["status"], "True");
    // Heartbeats keep the Ready condition fresh.
    wait_for("a newer heartbeat", || {
        node_ready(&world, "sick", &node)
            .filter(|c| c["lastHeartbeatTime"] != first["lastHeartbeatTime"])
    })
    .await;

    world.set_node_not_ready("default", "sick", &node).unwrap();
    let c = wait_for("Ready not True", || {
        node_ready(&world, "sick", &node).filter(|c| c["status"] != "True")
    })
    .await;
    // False as the kubelet posted it, or already Unknown when the grace period was short.
    assert!(
        c["reason"] == "KubeletNotReady" || c["reason"] == "NodeStatusUnknown",
        "{c}"
    );
    // Heartbeats stopped: the node-lifecycle controller gives up on it.
    wait_for("Ready=Unknown", || {
        node_ready(&world, "sick", &node).filter(|c| c["status"] == "Unknown")
    })
    .await;
    let api = world.management().api();
    wait_for("the Machine to see the Node NotReady", || {
        machines_of(&api, "sick")
            .into_iter()
            .find(|m| condition(m, "NodeReady").is_some_and(|c| c["status"] == "False"))
    })
    .await;

    assert_eq!(
        node_condition(&world, "sick", &node, "MemoryPressure").unwrap()["status"],
        "Unknown"
    );
    world.set_node_ready("default", "sick", &node).unwrap();
    assert_eq!(node_ready(&world, "sick", &node).unwrap()["status"], "True");
    assert_eq!(
        node_condition(&world, "sick", &node, "MemoryPressure").unwrap()["status"],
        "False"
    );
    wait_for("the Machine to see the Node Ready", || {
        machines_of(&api, "sick")
            .into_iter()
            .find(|m| condition(m, "NodeReady").is_some_and(|c| c["status"] == "True"))
    })
    .await;
    // Heartbeats resumed: the Node stays Ready past the grace period.
    let back = node_ready(&world, "sick", &node).unwrap();
    wait_for("a heartbeat after the restore", || {
        node_ready(&world, "sick", &node)
            .filter(|c| c["lastHeartbeatTime"] != back["lastHeartbeatTime"])
    })
    .await;
    assert_eq!(node_ready(&world, "sick", &node).unwrap()["status"], "True");
    assert!(
        world
            .set_node_not_ready("default", "sick", "no-such-node")
            .is_err()
    );
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vm_makes_its_node_unknown_and_keeps_the_machine() {
    let (world, _dir) = start_world().await;
    let node = running_cluster(&world, "novm").await;
    world.delete_node_vm("default", "novm", &node).unwrap();
    assert!(world.vcenter().get("default", &node).is_none());
    let c = wait_for("Ready=Unknown", || {
        node_ready(&world, "novm", &node).filter(|c| c["status"] == "Unknown")
    })
    .await;
    assert_eq!(c["reason"], "NodeStatusUnknown");
    let api = world.management().api();
    // CAPV does not clone a provisioned VM again; the Machine waits for remediation.
    wait_for("the VSphereVM to report the VM missing", || {
        list(&api, INFRA, "VSphereVM").into_iter().find(|vm| {
            condition(vm, "VirtualMachineProvisioned").is_some_and(|c| c["reason"] == "NotFound")
        })
    })
    .await;
    assert!(world.vcenter().get("default", &node).is_none());
    let machines = machines_of(&api, "novm");
    assert_eq!(machines.len(), 1);
    assert!(machines[0]["metadata"]["deletionTimestamp"].is_null());
    assert!(world.delete_node_vm("default", "novm", &node).is_err());
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_refuses_connections_and_keeps_state() {
    let (world, dir) = start_world().await;
    running_cluster(&world, "outage").await;
    let wc = world.workload_cluster("default", "outage").unwrap();
    let addr = wc.addr();
    assert!(TcpStream::connect(addr).is_ok());
    // The admin endpoint refuses anything but loopback (checked before binding).
    let refused = AdminServer::bind(world.clone(), "0.0.0.0:0".parse().unwrap()).await;
    assert!(matches!(refused, Err(FaultError::NotLoopback(_))));
    world.stop_api("default", "outage").await.unwrap();
    let err = TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    world.start_api("default", "outage").await.unwrap();
    let kubeconfig = dir.path().join("clusters/default/outage/kubeconfig");
    let nodes = kube_list_nodes(&kubeconfig).await;
    assert_eq!(nodes, 1, "the Node survived the outage");
    world.shutdown().await;
}

async fn kube_list_nodes(kubeconfig: &Path) -> usize {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    nodes.list(&Default::default()).await.unwrap().items.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_see_the_network_file_and_can_be_killed() {
    let (world, dir) = start_world().await;
    running_cluster(&world, "net").await;
    let file = world.network_file("default", "net");
    assert_eq!(file, dir.path().join("clusters/default/net/network"));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "up");
    world.cut_network("default", "net").unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "down");
    assert!(world.faults().network_cut("default", "net"));
    world.restore_network("default", "net").unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "up");
    assert!(world.cut_network("default", "nope").is_err());

    let wc = world.workload_cluster("default", "net").unwrap();
    wc.api()
        .create_object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "fledge-agent", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "agent", "image": "ghcr.io/fledge-dev/fledge-agent:0.1.0"}],
                    },
                },
            },
        }))
        .unwrap();
    let running = wait_for("the agent process", || {
        world
            .agents()
            .list()
            .into_iter()
            .find(|p| p.cluster == wc.name() && p.pid.is_some())
    })
    .await;
    let log = dir
        .path()
        .join("clusters/default/net/pods")
        .join(format!("{}.log", running.pod));
    wait_for("the agent to print its network file", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains(&format!("network-file={}", file.display())))
    })
    .await;
    let killed = world
        .kill_agent("default", "net", &running.namespace, &running.pod)
        .unwrap();
    assert_eq!(killed, 1);
    wait_for("the agent to be restarted", || {
        world.agents().list().into_iter().find(|p| {
            p.pod == running.pod && p.restart_count > running.restart_count && p.pid.is_some()
        })
    })
    .await;
    world.shutdown().await;
}

/// One HTTP/1.1 request; the status code and the JSON body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("sim.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fledge-sim"))
        .args(["serve", "--speed", "400", "--state-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let addr_file = dir.path().join("admin-addr");
    wait_for("kubeconfig", || {
        dir.path().join("kubeconfig").exists().then_some(())
    })
    .await;
    let addr: SocketAddr = wait_for("admin-addr", || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await;
    assert!(addr.ip().is_loopback());
    assert_eq!(http(addr, "GET", "/healthz", "").0, 200);

    // A cluster applied through the management kubeconfig comes up; then the knobs act on it.
    let kubeconfig = dir.path().join("kubeconfig");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let mut doc: Value = serde_saphyr::from_str(SINGLE_NODE).unwrap();
    doc["metadata"]["name"] = json!("remote");
    let cluster: WorkloadCluster = serde_json::from_value(doc).unwrap();
    let mut objects = vec![json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vsphere-credentials", "namespace": "default"},
        "data": {"username": STANDARD.encode("admin"), "password": STANDARD.encode("secret")},
    })];
    objects.extend(render(&cluster, Phase::Bootstrap).unwrap());
    assert_eq!(
        http(
            addr,
            "POST",
            "/v1/clusters/default/remote/fail-clones",
            r#"{"count":1}"#
        )
        .0,
        200
    );
    for obj in objects {
        let gvk: kube::api::TypeMeta = serde_json::from_value(obj.clone()).unwrap();
        let gvk = kube::api::GroupVersionKind::try_from(&gvk).unwrap();
        let (ar, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(client.clone(), "default", &ar);
        let obj: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
        api.create(&Default::default(), &obj).await.unwrap();
    }
    let start = Instant::now();
    loop {
        let (status, body) = http(addr, "GET", "/v1/clusters", "");
        assert_eq!(status, 200);
        if body["clusters"].as_array().unwrap().len() == 1 {
            assert_eq!(body["clusters"][0]["name"], "remote");
            assert_eq!(body["clusters"][0]["serving"], true);
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no workload cluster: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = http(addr, "POST", "/v1/clusters/default/remote/network/cut", "");
    assert_eq!(status, 200);
    let network = dir.path().join("clusters/default/remote/network");
    assert_eq!(std::fs::read_to_string(&network).unwrap().trim(), "down");
    assert_eq!(
        http(addr, "GET", "/v1/clusters", "").1["clusters"][0]["network"],
        "down"
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/v1/clusters/default/remote/network/restore",
            ""
        )
        .0,
        200
    );
    assert_eq!(std::fs::read_to_string(&network).unwrap().trim(), "up");
    assert_eq!(
        http(addr, "POST", "/v1/clusters/default/remote/api/stop", "").0,
        200
    );
    assert_eq!(
        http(addr, "GET", "/v1/clusters", "").1["clusters"][0]["serving"],
        false
    );
    assert_eq!(
        http(addr, "POST", "/v1/clusters/default/remote/api/start", "").0,
        200
    );
    assert_eq!(
        kube_list_nodes(&dir.path().join("clusters/default/remote/kubeconfig")).await,
        1
    );

    let (status, body) = http(addr, "POST", "/v1/clusters/default/nope/network/cut", "");
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("default/nope"));
    assert_eq!(
        http(
            addr,
            "POST",
            "/v1/clusters/default/remote/fail-clones",
            "{}"
        )
        .0,
        400
    );
    assert_eq!(http(addr, "GET", "/v1/nothing", "").0, 404);
    assert_eq!(http(addr, "POST", "/v1/helm/charts/cilium/fail", "").0, 200);
    assert_eq!(http(addr, "POST", "/v1/helm/charts/cilium/heal", "").0, 200);

    rustix_term(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!addr_file.exists(), "admin-addr removed on shutdown");
}

fn rustix_term(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

fn update_kcp(api: &ApiServer, name: &str, f: impl Fn(&mut Value)) {
    loop {
        let mut kcp = api
            .get_object(KCP, "KubeadmControlPlane", Some("default"), name)
            .unwrap();
        kcp["apiVersion"] = json!(KCP);
        kcp["kind"] = json!("KubeadmControlPlane");
        f(&mut kcp);
        match api.update_object(kcp) {
            Ok(_) => return,
            Err(e) if e.is_conflict() => {}
            Err(e) => panic!("updating KCP {name}: {e}"),
        }
    }
}

fn names(machines: &[Value]) -> Vec<String> {
    machines
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Brings cluster `name` up with three control-plane Machines; returns their names.
async fn three_control_planes(world: &World, name: &str) -> Vec<String> {
    let api = world.management().api();
    running_cluster(world, name).await;
    update_kcp(&api, &format!("{name}-control-plane"), |k| {
        k["spec"]["replicas"] = json!(3);
    });
    wait_for("three running control-plane Machines", || {
        let ms = machines_of(&api, name);
        (ms.len() == 3 && ms.iter().all(|m| m["status"]["phase"] == "Running")).then(|| names(&ms))
    })
    .await
}

/// Waits until `name` has `count` running Machines, none of them in `old`, asserting on the
/// way that the rollout never surges past one extra Machine.
async fn replaced(world: &World, name: &str, old: &[String], count: usize) -> Vec<Value> {
    let api = world.management().api();
    wait_for("every Machine replaced", || {
        let ms = machines_of(&api, name);
        assert!(ms.len() <= count + 1, "surge above one: {:?}", names(&ms));
        (ms.len() == count
            && ms.iter().all(|m| {
                m["status"]["phase"] == "Running"
                    && !old.contains(&m["metadata"]["name"].as_str().unwrap().to_owned())
            }))
        .then_some(ms)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcp_rollout_after_replaces_every_machine() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    let before = three_control_planes(&world, "roll").await;
    // Later than every Machine's creation (creation timestamps have second precision); the
    // controller acts once it has passed.
    let after = (chrono::Utc::now() + chrono::Duration::seconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    update_kcp(&api, "roll-control-plane", |k| {
        k["spec"]["rollout"]["after"] = json!(after);
    });
    let now = replaced(&world, "roll", &before, 3).await;
    for m in &now {
        assert!(m["metadata"]["creationTimestamp"].as_str().unwrap() >= after.as_str());
        let expiry = m["metadata"]["annotations"]["machine.cluster.x-k8s.io/certificates-expiry"]
            .as_str()
            .unwrap();
        assert!(
            expiry > after.as_str(),
            "simulated certificate expiry {expiry}"
        );
    }
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcp_rolls_machines_whose_certificates_expire() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    let node = running_cluster(&world, "certs").await;
    let old = machines_of(&api, "certs");
    assert!(
        old[0]["metadata"]["annotations"]["machine.cluster.x-k8s.io/certificates-expiry"]
            .is_string()
    );
    // The Machine's certificates (simulated) are about to expire.
    loop {
        let mut m = api
            .get_object(
                CAPI,
                "Machine",
                Some("default"),
                old[0]["metadata"]["name"].as_str().unwrap(),
            )
            .unwrap();
        m["apiVersion"] = json!(CAPI);
        m["kind"] = json!("Machine");
        m["metadata"]["annotations"]["machine.cluster.x-k8s.io/certificates-expiry"] =
            json!(kube_sim::api_server::now_rfc3339());
        match api.update_object(m) {
            Ok(_) => break,
            Err(e) if e.is_conflict() => {}
            Err(e) => panic!("{e}"),
        }
    }
    update_kcp(&api, "certs-control-plane", |k| {
        k["spec"]["rollout"]["before"]["certificatesExpiryDays"] = json!(7);
    });
    let now = replaced(&world, "certs", &names(&old), 1).await;
    assert_ne!(now[0]["status"]["nodeRef"]["name"], node.as_str());
    world.shutdown().await;
}

fn mark_unhealthy(api: &ApiServer, machine: &str) {
    loop {
        let mut m = api
            .get_object(CAPI, "Machine", Some("default"), machine)
            .unwrap();
        m["apiVersion"] = json!(CAPI);
        m["kind"] = json!("Machine");
        let conds = m["status"]["conditions"].as_array_mut().unwrap();
        conds.retain(|c| c["type"] != "HealthCheckSucceeded");
        conds.push(json!({"type": "HealthCheckSucceeded", "status": "False",
            "reason": "UnhealthyNode", "message": "set by the test as a MachineHealthCheck would",
            "lastTransitionTime": kube_sim::api_server::now_rfc3339()}));
        match api.update_object_status(m) {
            Ok(_) => return,
            Err(e) if e.is_conflict() => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcp_remediates_unhealthy_machines_but_keeps_quorum() {
    let (world, _dir) = start_world().await;
    let api = world.management().api();
    // One member: removing it would lose quorum, so it stays.
    running_cluster(&world, "solo").await;
    let solo = names(&machines_of(&api, "solo"));
    mark_unhealthy(&api, &solo[0]);
    let kcp = wait_for("Remediating=True", || {
        api.get_object(
            KCP,
            "KubeadmControlPlane",
            Some("default"),
            "solo-control-plane",
        )
        .ok()
        .filter(|k| condition(k, "Remediating").is_some_and(|c| c["status"] == "True"))
    })
    .await;
    assert!(
        condition(&kcp, "Remediating").unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("quorum")
    );
    assert_eq!(names(&machines_of(&api, "solo")), solo);

    // Three members: the unhealthy one is replaced.
    let three = three_control_planes(&world, "trio").await;
    mark_unhealthy(&api, &three[1]);
    let now = wait_for("the unhealthy Machine replaced", || {
        let ms = machines_of(&api, "trio");
        (ms.len() == 3
            && ms.iter().all(|m| m["status"]["phase"] == "Running")
            && !names(&ms).contains(&three[1]))
        .then(|| names(&ms))
    })
    .await;
    assert!(
        now.contains(&three[0]) && now.contains(&three[2]),
        "{now:?}"
    );
    world.shutdown().await;
}
