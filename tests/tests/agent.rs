//! The agent end to end (issue 7): `fledge-sim` + `fledge-manager` + real `fledge-agent`
//! processes. After the pivot the agent brings the cluster to its full spec, installs the
//! profile's add-ons, and keeps the cluster there with or without the manager.
//!
//! The manager installs Flux into the workload cluster (InstallingProviders) because the
//! profile has a Helm add-on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_core::names;
use fledge_core::proto::v1;
use fledge_core::spec::{
    ClusterProfile, WorkloadCluster, WorkloadClusterSpec, WorkloadClusterStatus,
};
use fledge_e2e::{
    World, WorldOptions, agent_logs, authed, client_from_file, create_credentials, dynamic,
    eventually, example_cluster, example_profiles, wait_for_status_within,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

const NS: &str = "team-a";
const TOKEN: &str = "token-a";
/// Bringing a cluster up takes a while on 2 shared cores; a safety net, not a timing assertion.
const PROVISION: Duration = Duration::from_secs(480);

/// Creates `profiles` and cluster `cluster` in the management cluster.
async fn create(world: &World, cluster: &WorkloadCluster, profiles: &[ClusterProfile]) {
    let kube = world.kube().await;
    create_credentials(&kube, NS).await;
    let api: Api<ClusterProfile> = Api::namespaced(kube.clone(), NS);
    for profile in profiles {
        api.create(&PostParams::default(), profile)
            .await
            .expect("create profile");
    }
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube, NS);
    clusters
        .create(&PostParams::default(), cluster)
        .await
        .expect("create cluster");
}

async fn clusters(world: &World) -> Api<WorkloadCluster> {
    Api::namespaced(world.kube().await, NS)
}

fn addon_state<'a>(status: &'a WorkloadClusterStatus, name: &str) -> Option<&'a str> {
    status
        .addons
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.state.as_str())
}

/// Ready with every generation of the spec applied by the agent.
fn ready_and_current(status: &WorkloadClusterStatus) -> bool {
    status.phase.as_deref() == Some("Ready")
        && status
            .agent
            .as_ref()
            .is_some_and(|a| a.connected && a.reported_phase.as_deref() == Some("Ready"))
}

async fn wait_ready(world: &World, name: &str, what: &str) -> WorkloadCluster {
    wait_for_status_within(
        &clusters(world).await,
        name,
        what,
        PROVISION,
        ready_and_current,
    )
    .await
}

/// Get → change → UpdateCluster with the generation read.
async fn update(
    world: &World,
    manager: usize,
    name: &str,
    change: impl Fn(&mut WorkloadClusterSpec),
) -> i64 {
    let mut grpc = world.grpc(manager).await;
    let current = grpc
        .get_cluster(authed(v1::GetClusterRequest { name: name.into() }, TOKEN))
        .await
        .expect("get over gRPC")
        .into_inner();
    let mut spec = WorkloadClusterSpec::from(current.spec.clone().expect("spec"));
    change(&mut spec);
    let updated = grpc
        .update_cluster(authed(
            v1::UpdateClusterRequest {
                name: name.into(),
                spec: Some(v1::ClusterSpec::from(&spec)),
                expected_generation: current.generation,
            },
            TOKEN,
        ))
        .await
        .expect("update")
        .into_inner();
    updated.generation
}

/// The agent Pod of the cluster.
async fn agent_pod(workload: &Client) -> String {
    let pods: Api<Pod> = Api::namespaced(workload.clone(), names::FLEDGE_NAMESPACE);
    eventually("the agent Pod", || async {
        pods.list(&ListParams::default().labels("app.kubernetes.io/name=fledge-agent"))
            .await
            .ok()?
            .items
            .into_iter()
            .find_map(|p| p.metadata.name)
    })
    .await
}

fn md_replicas(md: &kube::api::DynamicObject) -> Option<i64> {
    md.data["spec"]["replicas"].as_i64()
}

fn ready_machines(machines: &[kube::api::DynamicObject], md: &str) -> usize {
    machines
        .iter()
        .filter(|m| {
            m.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::DEPLOYMENT_NAME_LABEL))
                .is_some_and(|d| d == md)
                && m.metadata.deletion_timestamp.is_none()
                && m.data["status"]["nodeRef"]["name"].is_string()
        })
        .count()
}

/// Samples the workload cluster's KCP and whether the monitoring HelmRelease exists before
/// the CNI DaemonSet is available, until stopped.
struct Recorder {
    cp_samples: Arc<Mutex<Vec<(i64, i64)>>>,
    order_violations: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    fn start(world: &World, name: &str) -> Recorder {
        let cp_samples = Arc::new(Mutex::new(Vec::new()));
        let order_violations = Arc::new(Mutex::new(Vec::new()));
        let kubeconfig = world.workload_kubeconfig(NS, name);
        let kcp_name = format!("{name}-control-plane");
        let (samples, violations) = (cp_samples.clone(), order_violations.clone());
        let task = tokio::spawn(async move {
            while !kubeconfig.exists() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let client = client_from_file(&kubeconfig).await;
            let kcps = dynamic(
                &client,
                NS,
                "controlplane.cluster.x-k8s.io",
                "v1beta2",
                "KubeadmControlPlane",
            );
            let releases = dynamic(
                &client,
                names::FLUX_NAMESPACE,
                "helm.toolkit.fluxcd.io",
                "v2",
                "HelmRelease",
            );
            let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), "edge-cni");
            let (mut cni_was_available, mut release_seen) = (false, false);
            loop {
                if let Ok(Some(kcp)) = kcps.get_opt(&kcp_name).await {
                    let replicas = kcp.data["status"]["replicas"].as_i64().unwrap_or(0);
                    let ready = kcp.data["status"]["readyReplicas"].as_i64().unwrap_or(0);
                    let mut s = samples.lock().unwrap();
                    if s.last() != Some(&(replicas, ready)) {
                        s.push((replicas, ready));
                    }
                }
                // dependsOn: the HelmRelease may only appear once the CNI's DaemonSet was
                // available. Judged when the release is first seen (later, a joining node makes
                // the DaemonSet briefly unavailable again, which is no ordering violation).
                let release_now =
                    !release_seen && matches!(releases.get_opt("monitoring").await, Ok(Some(_)));
                let available = daemonsets
                    .get_opt("edge-cni")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|ds| {
                        let st = ds.status.unwrap_or_default();
                        st.desired_number_scheduled > 0
                            && st.number_available.unwrap_or(0) >= st.desired_number_scheduled
                    });
                cni_was_available |= available;
                if release_now {
                    release_seen = true;
                    if !cni_was_available {
                        violations.lock().unwrap().push("HelmRelease monitoring created before DaemonSet edge-cni was available".into());
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        Recorder {
            cp_samples,
            order_violations,
            task,
        }
    }
}

/// Resident set sizes (KiB) of the agent processes of this world's cluster `name` (read from
/// `/proc`), for the report; informational only.
fn agent_rss_kib(world: &World, name: &str) -> Vec<u64> {
    let marker = format!("FLEDGE_CLUSTER_NAME={name}");
    let state = world.state_dir.display().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let exe = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if !exe.ends_with(b"fledge-agent") {
            continue;
        }
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.iter().any(|v| v == &marker) || !vars.iter().any(|v| v.contains(&state)) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            out.push(kib);
        }
    }
    out
}

/// The full flow on `examples/edge-1.yaml`, then the cluster on its own: the manager killed, a
/// worker VM lost, an add-on object deleted, the agent restarted, the manager back, a network
/// cut with a spec change made meanwhile.
#[tokio::test]
async fn edge_1_comes_up_and_keeps_itself_at_its_spec_without_the_manager() {
    let mut world = World::start(WorldOptions {
        speed: 100,
        ..Default::default()
    })
    .await;
    world.start_manager("manager-a").await;
    let name = "edge-1";
    let recorder = Recorder::start(&world, name);
    create(
        &world,
        &example_cluster("edge-1.yaml", NS, name),
        &example_profiles("edge-1.yaml", NS),
    )
    .await;

    // --- Full flow.
    let ready = wait_ready(&world, name, "Ready").await;
    recorder.task.abort();
    let status = ready.status.expect("status");
    let cp = status.control_plane.clone().expect("control plane counts");
    assert_eq!((cp.ready, cp.desired), (3, 3), "{status:#?}");
    assert_eq!(cp.version.as_deref(), Some("v1.32.4"));
    let general = &status.pools["general"];
    assert_eq!((general.ready, general.desired), (3, 3), "{status:#?}");
    let batch = &status.pools["batch"];
    assert_eq!(
        (batch.ready, batch.desired),
        (1, 1),
        "autoscaled pool starts at its minimum: {status:#?}"
    );
    assert_eq!(addon_state(&status, "cni"), Some("Healthy"));
    assert_eq!(addon_state(&status, "monitoring"), Some("Healthy"));
    // The control plane grew one machine at a time.
    let samples = recorder.cp_samples.lock().unwrap().clone();
    assert!(
        samples.iter().any(|(r, _)| *r == 3),
        "KCP samples {samples:?}"
    );
    for pair in samples.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 <= 1,
            "KCP grew by more than one machine: {samples:?}"
        );
    }
    for (replicas, ready) in &samples {
        assert!(
            replicas - ready <= 1,
            "more than one control-plane machine coming up at once: {samples:?}"
        );
    }
    let violations = recorder.order_violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:?}");
    let workload = world.workload_kube(NS, name).await;
    let releases = dynamic(
        &workload,
        names::FLUX_NAMESPACE,
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
    );
    let release = releases.get("monitoring").await.expect("HelmRelease");
    let ready_cond = release.data["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
    assert_eq!(
        ready_cond.map(|c| c["status"].clone()),
        Some(serde_json::json!("True"))
    );
    // The management cluster no longer holds the CAPI objects; the agent owns the KCP's replicas.
    let kcp = dynamic(
        &workload,
        NS,
        "controlplane.cluster.x-k8s.io",
        "v1beta2",
        "KubeadmControlPlane",
    )
    .get("edge-1-control-plane")
    .await
    .expect("KCP");
    assert_eq!(kcp.data["spec"]["replicas"], 3);
    let mds = dynamic(
        &workload,
        NS,
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineDeployment",
    );
    let batch_md = mds.get("edge-1-batch").await.expect("batch MD");
    assert_eq!(
        md_replicas(&batch_md),
        None,
        "the agent must not own an autoscaled pool's replicas"
    );

    let rss = agent_rss_kib(&world, name);
    assert!(!rss.is_empty(), "the agent process runs");
    eprintln!("agent RSS after Ready (KiB): {rss:?}");

    // --- The manager goes away.
    world.kill_manager(0).await;
    let machines = dynamic(&workload, NS, "cluster.x-k8s.io", "v1beta2", "Machine");
    // A worker VM is lost: the MachineHealthCheck replaces it.
    let all = machines
        .list(&ListParams::default())
        .await
        .expect("machines")
        .items;
    let victim = all
        .iter()
        .find(|m| {
            m.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::DEPLOYMENT_NAME_LABEL))
                .is_some_and(|d| d == "edge-1-general")
        })
        .expect("a general machine");
    let victim_name = victim.metadata.name.clone().unwrap();
    let node = victim.data["status"]["nodeRef"]["name"]
        .as_str()
        .expect("node")
        .to_owned();
    world
        .admin_ok(
            "POST",
            &format!("/v1/clusters/{NS}/{name}/nodes/{node}/delete-vm"),
            "",
        )
        .await;
    eventually("the lost worker replaced", || async {
        let items = machines.list(&ListParams::default()).await.ok()?.items;
        let gone = items
            .iter()
            .all(|m| m.metadata.name.as_deref() != Some(victim_name.as_str()));
        (gone && ready_machines(&items, "edge-1-general") == 3).then_some(())
    })
    .await;
    // An add-on object is deleted: the agent applies it again.
    let daemonsets: Api<DaemonSet> = Api::namespaced(workload.clone(), "edge-cni");
    let old_uid = daemonsets
        .get("edge-cni")
        .await
        .expect("DaemonSet")
        .metadata
        .uid;
    daemonsets
        .delete("edge-cni", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("edge-cni re-applied", || async {
        let ds = daemonsets.get_opt("edge-cni").await.ok()??;
        (ds.metadata.uid != old_uid).then_some(())
    })
    .await;
    let drift_line = eventually("the drift correction time in the agent log", || async {
        let logs = agent_logs(&world, NS, name);
        logs.lines()
            .find(|l| l.contains("drift corrected"))
            .map(str::to_owned)
    })
    .await;
    eprintln!("drift: {drift_line}");
    // The agent process dies: the node runtime restarts it and it works from its cache.
    let pod = agent_pod(&workload).await;
    let killed = world
        .admin_ok(
            "POST",
            &format!(
                "/v1/clusters/{NS}/{name}/agents/{}/{pod}/kill",
                names::FLEDGE_NAMESPACE
            ),
            "",
        )
        .await;
    assert!(killed["killed"].as_u64().unwrap_or(0) >= 1, "{killed}");
    eventually("the restarted agent reconciling from its cache", || async {
        let logs = agent_logs(&world, NS, name);
        (logs.matches("reconciling from the cached spec").count() >= 1
            && logs.matches("starting").count() >= 2)
            .then_some(())
    })
    .await;
    let old_uid = daemonsets
        .get("edge-cni")
        .await
        .expect("DaemonSet")
        .metadata
        .uid;
    daemonsets
        .delete("edge-cni", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("edge-cni re-applied by the restarted agent", || async {
        let ds = daemonsets.get_opt("edge-cni").await.ok()??;
        (ds.metadata.uid != old_uid).then_some(())
    })
    .await;

    // --- The manager comes back: status is current again.
    // Same address: agents find the manager through a stable endpoint (a Service in real life).
    let addr = world.managers[0].addr.clone();
    world.start_manager_at("manager-b", &addr, &[]).await;
    let back = wait_for_status_within(
        &clusters(&world).await,
        name,
        "Ready again with the manager back",
        PROVISION,
        |s| {
            ready_and_current(s)
                && s.pools.get("general").is_some_and(|p| p.ready == 3)
                && s.agent
                    .as_ref()
                    .and_then(|a| a.replica.as_deref())
                    .is_some_and(|r| r.starts_with("manager-b"))
        },
    )
    .await;
    let back = back.status.unwrap();
    assert_eq!(addon_state(&back, "cni"), Some("Healthy"), "{back:#?}");

    // --- Network cut; a spec change made meanwhile is applied after the restore, acked once.
    world
        .admin_ok("POST", &format!("/v1/clusters/{NS}/{name}/network/cut"), "")
        .await;
    wait_for_status_within(
        &clusters(&world).await,
        name,
        "disconnected",
        PROVISION,
        |s| s.agent.as_ref().is_some_and(|a| !a.connected),
    )
    .await;
    let generation = update(&world, 1, name, |spec| {
        spec.workers
            .iter_mut()
            .find(|w| w.name == "general")
            .unwrap()
            .replicas = Some(4);
    })
    .await;
    // The cluster keeps working while cut: drift is still repaired.
    let old_uid = daemonsets
        .get("edge-cni")
        .await
        .expect("DaemonSet")
        .metadata
        .uid;
    daemonsets
        .delete("edge-cni", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("edge-cni re-applied while the network is cut", || async {
        let ds = daemonsets.get_opt("edge-cni").await.ok()??;
        (ds.metadata.uid != old_uid).then_some(())
    })
    .await;
    let general_md = mds.get("edge-1-general").await.expect("MD");
    assert_eq!(
        md_replicas(&general_md),
        Some(3),
        "no spec can arrive while the network is cut"
    );
    world
        .admin_ok(
            "POST",
            &format!("/v1/clusters/{NS}/{name}/network/restore"),
            "",
        )
        .await;
    eventually("the pool scaled to 4 after the restore", || async {
        let md = mds.get("edge-1-general").await.ok()?;
        (md_replicas(&md) == Some(4)).then_some(())
    })
    .await;
    wait_for_status_within(
        &clusters(&world).await,
        name,
        "Ready with the new generation",
        PROVISION,
        |s| {
            ready_and_current(s)
                && s.pools
                    .get("general")
                    .is_some_and(|p| p.ready == 4 && p.desired == 4)
                && s.agent
                    .as_ref()
                    .and_then(|a| a.applied_generation)
                    .is_some_and(|g| g >> 32 >= generation)
        },
    )
    .await;
    let logs = agent_logs(&world, NS, name);
    let acks = logs
        .lines()
        .filter(|l| l.contains("acknowledging"))
        .filter_map(|l| {
            l.split("generation=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<i64>()
                .ok()
        })
        .filter(|g| g >> 32 == generation)
        .count();
    assert_eq!(
        acks, 1,
        "the new generation is acknowledged exactly once:\n{logs}"
    );
}

fn configmap(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"owner": "fledge"}})
}

/// A profile whose Helm chart fails (the sim fails it), with a dependent, an independent
/// add-on, and a manifest of a kind the cluster does not serve.
fn failing_profile() -> ClusterProfile {
    let spec = serde_json::json!({
        "addons": [
            {"name": "base", "order": 10, "manifests": [configmap("base")]},
            {"name": "widgets", "order": 10, "manifests": [{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"}}]},
            {"name": "monitoring", "order": 20, "dependsOn": ["base"],
             "helm": {"repository": "https://charts.example.com", "chart": "broken-chart", "version": "1.0.0"},
             "health": {"helmReleaseReady": true, "timeoutSeconds": 120}},
            {"name": "dashboards", "order": 30, "dependsOn": ["monitoring"], "manifests": [configmap("dashboards")]},
            {"name": "extra", "order": 30, "manifests": [configmap("extra")]},
        ]
    });
    let mut profile = ClusterProfile::new(
        "failing",
        serde_json::from_value(spec).expect("profile spec"),
    );
    profile.metadata.namespace = Some(NS.into());
    profile
}

/// Bad input and isolation: a failing add-on gate (Failed, dependents Blocked, others proceed,
/// cluster Degraded with the reason), a kind the cluster does not serve, a network cut of one
/// cluster that leaves another alone, and a corrupted cache Secret.
#[tokio::test]
async fn failures_are_reported_contained_and_recovered_from() {
    let mut world = World::start(WorldOptions {
        speed: 100,
        ..Default::default()
    })
    .await;
    world.start_manager("manager-a").await;
    world
        .admin_ok("POST", "/v1/helm/charts/broken-chart/fail", "")
        .await;
    let (failing, healthy) = ("sn-fail", "sn-ok");
    let mut cluster = example_cluster("single-node.yaml", NS, failing);
    cluster.spec.profile = Some("failing".into());
    create(&world, &cluster, &[failing_profile()]).await;
    create(
        &world,
        &example_cluster("single-node.yaml", NS, healthy),
        &[],
    )
    .await;

    // --- A failing gate: Failed with the reason, its dependent Blocked, the others healthy.
    let degraded = wait_for_status_within(
        &clusters(&world).await,
        failing,
        "Degraded",
        PROVISION,
        |s| {
            s.phase.as_deref() == Some("Degraded")
                && addon_state(s, "monitoring") == Some("Failed")
                && addon_state(s, "extra") == Some("Healthy")
        },
    )
    .await
    .status
    .unwrap();
    assert_eq!(
        addon_state(&degraded, "base"),
        Some("Healthy"),
        "{degraded:#?}"
    );
    assert_eq!(
        addon_state(&degraded, "dashboards"),
        Some("Blocked"),
        "{degraded:#?}"
    );
    assert_eq!(
        addon_state(&degraded, "widgets"),
        Some("Failed"),
        "{degraded:#?}"
    );
    let monitoring = degraded
        .addons
        .iter()
        .find(|a| a.name == "monitoring")
        .unwrap();
    assert!(
        monitoring.message.contains("InstallFailed"),
        "{monitoring:?}"
    );
    let widgets = degraded
        .addons
        .iter()
        .find(|a| a.name == "widgets")
        .unwrap();
    assert!(widgets.message.contains("Widget"), "{widgets:?}");
    let reason = degraded
        .agent
        .as_ref()
        .and_then(|a| a.reported_message.clone())
        .unwrap_or_default();
    assert!(
        reason.contains("Failed"),
        "the Degraded reason names the failure: {reason:?}"
    );
    let workload = world.workload_kube(NS, failing).await;
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(workload.clone(), "default");
    assert!(configmaps.get_opt("extra").await.unwrap().is_some());
    assert!(
        configmaps.get_opt("dashboards").await.unwrap().is_none(),
        "a blocked add-on is not applied"
    );
    // The chart is healed: the add-on recovers and its dependent goes ahead.
    world
        .admin_ok("POST", "/v1/helm/charts/broken-chart/heal", "")
        .await;
    let releases = dynamic(
        &workload,
        names::FLUX_NAMESPACE,
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
    );
    // Flux retries on its interval; nudge the release as `flux reconcile` would.
    releases
        .patch(
            "monitoring",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "now"}}})),
        )
        .await
        .expect("annotate");
    wait_for_status_within(
        &clusters(&world).await,
        failing,
        "monitoring healthy after the heal",
        PROVISION,
        |s| {
            addon_state(s, "monitoring") == Some("Healthy")
                && addon_state(s, "dashboards") == Some("Healthy")
        },
    )
    .await;

    // --- Add-ons removed from the profile are pruned; the others stay.
    let profiles: Api<ClusterProfile> = Api::namespaced(world.kube().await, NS);
    let mut profile = profiles.get("failing").await.expect("profile");
    profile
        .spec
        .addons
        .retain(|a| a.name != "extra" && a.name != "widgets");
    profiles
        .replace("failing", &PostParams::default(), &profile)
        .await
        .expect("update the profile");
    eventually("the removed add-on's objects pruned", || async {
        let gone = configmaps.get_opt("extra").await.ok()?.is_none();
        let inventory: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(workload.clone(), names::FLEDGE_NAMESPACE);
        let inventory_gone = inventory
            .get_opt("fledge-addon-extra")
            .await
            .ok()?
            .is_none();
        (gone && inventory_gone).then_some(())
    })
    .await;
    assert!(
        configmaps.get_opt("base").await.unwrap().is_some(),
        "other add-ons stay"
    );
    assert!(
        configmaps.get_opt("dashboards").await.unwrap().is_some(),
        "other add-ons stay"
    );
    wait_for_status_within(
        &clusters(&world).await,
        failing,
        "Ready without the removed add-ons",
        PROVISION,
        |s| {
            ready_and_current(s)
                && s.addons
                    .iter()
                    .all(|a| a.name != "extra" && a.name != "widgets")
        },
    )
    .await;

    // --- A network cut of one cluster leaves the other alone.
    wait_ready(&world, healthy, "Ready").await;
    world
        .admin_ok(
            "POST",
            &format!("/v1/clusters/{NS}/{failing}/network/cut"),
            "",
        )
        .await;
    wait_for_status_within(
        &clusters(&world).await,
        failing,
        "disconnected",
        PROVISION,
        |s| s.agent.as_ref().is_some_and(|a| !a.connected),
    )
    .await;
    let other = clusters(&world)
        .await
        .get(healthy)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        other.agent.as_ref().is_some_and(|a| a.connected),
        "{other:#?}"
    );
    world
        .admin_ok(
            "POST",
            &format!("/v1/clusters/{NS}/{failing}/network/restore"),
            "",
        )
        .await;
    wait_for_status_within(
        &clusters(&world).await,
        failing,
        "reconnected",
        PROVISION,
        |s| s.agent.as_ref().is_some_and(|a| a.connected),
    )
    .await;

    // --- A corrupted cache: a clear error, no crash loop, nothing deleted; the manager's
    // spec repairs it once the agent can reach it again.
    world
        .admin_ok(
            "POST",
            &format!("/v1/clusters/{NS}/{healthy}/network/cut"),
            "",
        )
        .await;
    let ok_workload = world.workload_kube(NS, healthy).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(ok_workload.clone(), names::FLEDGE_NAMESPACE);
    secrets
        .patch(
            "fledge-spec",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"data": {"spec.json": "bm90IGpzb24="}})),
        )
        .await
        .expect("corrupt the cache");
    let pod = agent_pod(&ok_workload).await;
    world
        .admin_ok(
            "POST",
            &format!(
                "/v1/clusters/{NS}/{healthy}/agents/{}/{pod}/kill",
                names::FLEDGE_NAMESPACE
            ),
            "",
        )
        .await;
    let logs = eventually("the cache error in the agent log", || async {
        let logs = agent_logs(&world, NS, healthy);
        logs.contains("the cached spec is unusable").then_some(logs)
    })
    .await;
    assert!(
        logs.lines()
            .any(|l| l.contains("unusable") && l.contains("spec.json")),
        "{logs}"
    );
    assert_eq!(
        logs.matches("fledge_agent: starting").count(),
        2,
        "one restart (the kill), no crash loop:\n{logs}"
    );
    let kcp = dynamic(
        &ok_workload,
        NS,
        "controlplane.cluster.x-k8s.io",
        "v1beta2",
        "KubeadmControlPlane",
    );
    assert!(
        kcp.get_opt(&format!("{healthy}-control-plane"))
            .await
            .unwrap()
            .is_some(),
        "nothing is deleted"
    );
    world
        .admin_ok(
            "POST",
            &format!("/v1/clusters/{NS}/{healthy}/network/restore"),
            "",
        )
        .await;
    eventually("the cache rewritten from the manager's spec", || async {
        let secret = secrets.get("fledge-spec").await.ok()?;
        let spec = secret.data?.get("spec.json")?.0.clone();
        serde_json::from_slice::<serde_json::Value>(&spec)
            .ok()
            .map(|_| ())
    })
    .await;
    wait_for_status_within(
        &clusters(&world).await,
        healthy,
        "Ready after the cache repair",
        PROVISION,
        ready_and_current,
    )
    .await;

    // --- Certificate renewal: a manager that renews certificates expiring within 3000 h
    // (the installed one lives 90 days) hands the agent a new one; the agent stores it in its
    // identity Secret and reconnects with it once.
    let before = secrets
        .get("fledge-agent-identity")
        .await
        .expect("identity Secret")
        .data
        .and_then(|d| d.get("tls.crt").cloned());
    world.kill_manager(0).await;
    let addr = world.managers[0].addr.clone();
    world
        .start_manager_at(
            "manager-renew",
            &addr,
            &[
                "--agent-cert-renew-before",
                "3000h",
                "--agent-cert-validity",
                "8000h",
            ],
        )
        .await;
    eventually("the renewed certificate in the identity Secret", || async {
        let now = secrets
            .get("fledge-agent-identity")
            .await
            .ok()?
            .data?
            .get("tls.crt")
            .cloned();
        (now.is_some() && now != before).then_some(())
    })
    .await;
    wait_for_status_within(
        &clusters(&world).await,
        healthy,
        "connected with the renewed certificate",
        PROVISION,
        |s| {
            s.agent.as_ref().is_some_and(|a| {
                a.connected
                    && a.replica
                        .as_deref()
                        .is_some_and(|r| r.starts_with("manager-renew"))
            })
        },
    )
    .await;
    // The agent logs its reconnect just after the manager records it.
    let logs = eventually(
        "the reconnect with the renewed certificate in the log",
        || async {
            let logs = agent_logs(&world, NS, healthy);
            let after = logs
                .split("reconnecting with the renewed certificate")
                .nth(1)?;
            after.contains("connected to the manager").then_some(logs)
        },
    )
    .await;
    assert_eq!(
        logs.matches("renewed client certificate stored").count(),
        1,
        "one renewal, one reconnect:\n{logs}"
    );
}
