//! Day-2 operations end to end (issue 8): each is a spec change through the manager's
//! `UpdateCluster` (expected generation), streamed to the agent, applied by the agent to the
//! CAPI objects in the workload cluster. Every test asserts the CAPI end state in the workload
//! cluster and the status reported back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fledge_core::names;
use fledge_core::proto::v1;
use fledge_core::spec::{
    Autoscaling, CertificatesSpec, MachineShape, WorkerPool, WorkloadCluster, WorkloadClusterSpec,
};
use fledge_e2e::{
    World, WorldOptions, authed, create_credentials, dynamic, eventually, example_cluster,
    wait_for_status,
};
use futures::StreamExt;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};

const TENANT: &str = "team-a";
const TOKEN: &str = "token-a";

/// A world with its manager and one cluster provisioned to Ready.
struct Fixture {
    world: World,
    name: String,
    /// The manager the test talks to.
    manager: usize,
}

impl Fixture {
    /// Provisions the single-node example, changed by `shape`, to Ready.
    async fn ready(name: &str, speed: u32, shape: impl FnOnce(&mut WorkloadClusterSpec)) -> Self {
        let mut world = World::start(WorldOptions {
            speed,
            ..Default::default()
        })
        .await;
        world.start_manager("manager-a").await;
        let kube = world.kube().await;
        create_credentials(&kube, TENANT).await;
        let mut cluster = example_cluster("single-node.yaml", TENANT, name);
        shape(&mut cluster.spec);
        let mut grpc = world.grpc(0).await;
        grpc.create_cluster(authed(
            v1::CreateClusterRequest {
                name: name.into(),
                spec: Some(v1::ClusterSpec::from(&cluster.spec)),
            },
            TOKEN,
        ))
        .await
        .expect("create over gRPC");
        let fixture = Fixture {
            world,
            name: name.into(),
            manager: 0,
        };
        fixture.wait_ready("Ready after create").await;
        fixture
    }

    async fn clusters(&self) -> Api<WorkloadCluster> {
        Api::namespaced(self.world.kube().await, TENANT)
    }

    /// Waits for phase Ready with the current generation applied.
    async fn wait_ready(&self, what: &str) -> WorkloadCluster {
        let clusters = self.clusters().await;
        let current = clusters.get(&self.name).await.expect("get");
        let generation = current.metadata.generation.unwrap_or_default();
        wait_for_status(&clusters, &self.name, what, move |s| {
            s.phase.as_deref() == Some("Ready")
                && s.observed_generation == Some(generation)
                && s.agent
                    .as_ref()
                    .and_then(|a| a.applied_generation)
                    .is_some_and(|g| g >> 32 >= generation)
        })
        .await
    }

    /// Get → change → UpdateCluster with the generation read (one retry on ABORTED).
    async fn update(&self, change: impl Fn(&mut WorkloadClusterSpec)) {
        let mut grpc = self.world.grpc(self.manager).await;
        for _ in 0..2 {
            let current = grpc
                .get_cluster(authed(
                    v1::GetClusterRequest {
                        name: self.name.clone(),
                    },
                    TOKEN,
                ))
                .await
                .expect("get over gRPC")
                .into_inner();
            let mut spec = WorkloadClusterSpec::from(current.spec.clone().expect("spec"));
            change(&mut spec);
            match grpc
                .update_cluster(authed(
                    v1::UpdateClusterRequest {
                        name: self.name.clone(),
                        spec: Some(v1::ClusterSpec::from(&spec)),
                        expected_generation: current.generation,
                    },
                    TOKEN,
                ))
                .await
            {
                Ok(_) => return,
                Err(status) if status.code() == tonic::Code::Aborted => continue,
                Err(status) => panic!("update refused: {status:?}"),
            }
        }
        panic!("update kept conflicting");
    }

    async fn workload(&self) -> Client {
        self.world.workload_kube(TENANT, &self.name).await
    }
}

fn pool(name: &str, replicas: i32) -> WorkerPool {
    WorkerPool {
        name: name.into(),
        replicas: Some(replicas),
        machine: MachineShape {
            cpus: 2,
            memory_mib: 4096,
            disk_gib: 40,
        },
        template: None,
        labels: BTreeMap::new(),
        taints: Vec::new(),
        autoscaling: None,
    }
}

fn machines(client: &Client) -> Api<DynamicObject> {
    dynamic(client, TENANT, "cluster.x-k8s.io", "v1beta2", "Machine")
}

fn label<'a>(obj: &'a DynamicObject, key: &str) -> Option<&'a str> {
    obj.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn is_control_plane(obj: &DynamicObject) -> bool {
    label(obj, names::CONTROL_PLANE_LABEL).is_some()
}

fn is_deleting(obj: &DynamicObject) -> bool {
    obj.metadata.deletion_timestamp.is_some()
}

fn machine_version(obj: &DynamicObject) -> String {
    obj.data["spec"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn node_ready(obj: &DynamicObject) -> bool {
    obj.data["status"]["nodeRef"]["name"].is_string()
        && obj.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Waits until the live (not deleting) Machines of a group number `count`, all with a Ready
/// node, and returns their names. `group` is `None` for the control plane, else the pool.
async fn settle(f: &Fixture, group: Option<&str>, count: usize) -> Vec<String> {
    let client = f.workload().await;
    let md = group.map(|p| format!("{}-{p}", f.name));
    let what = format!("{} machines of {group:?} ready", count);
    eventually(&what, || {
        let api = machines(&client);
        let md = md.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            let of_group: Vec<&DynamicObject> = list
                .items
                .iter()
                .filter(|m| match &md {
                    None => is_control_plane(m),
                    Some(md) => label(m, names::DEPLOYMENT_NAME_LABEL) == Some(md.as_str()),
                })
                .collect();
            let all_settled = of_group.iter().all(|m| !is_deleting(m) && node_ready(m));
            (of_group.len() == count && all_settled).then(|| {
                let mut names: Vec<String> = of_group
                    .iter()
                    .map(|m| m.metadata.name.clone().unwrap_or_default())
                    .collect();
                names.sort();
                names
            })
        }
    })
    .await
}

async fn kcp(f: &Fixture) -> DynamicObject {
    let client = f.workload().await;
    dynamic(
        &client,
        TENANT,
        "controlplane.cluster.x-k8s.io",
        "v1beta2",
        "KubeadmControlPlane",
    )
    .get(&format!("{}-control-plane", f.name))
    .await
    .expect("the KubeadmControlPlane lives in the workload cluster")
}

async fn machine_deployment(f: &Fixture, pool: &str) -> Option<DynamicObject> {
    let client = f.workload().await;
    dynamic(
        &client,
        TENANT,
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineDeployment",
    )
    .get_opt(&format!("{}-{pool}", f.name))
    .await
    .expect("read MachineDeployment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_control_plane_and_pools_both_ways() {
    let f = Fixture::ready("scale", 200, |spec| {
        spec.control_plane.replicas = 3;
        spec.workers = vec![pool("work", 3)];
    })
    .await;
    assert_eq!(settle(&f, None, 3).await.len(), 3);
    assert_eq!(settle(&f, Some("work"), 3).await.len(), 3);

    // Control plane 3 → 5 → 3 (odd only).
    f.update(|s| s.control_plane.replicas = 5).await;
    settle(&f, None, 5).await;
    let ready = f.wait_ready("Ready at 5 control-plane nodes").await;
    let status = ready.status.expect("status");
    assert_eq!(
        status.control_plane.as_ref().map(|c| (c.ready, c.desired)),
        Some((5, 5))
    );
    assert_eq!(kcp(&f).await.data["spec"]["replicas"], 5);
    f.update(|s| s.control_plane.replicas = 3).await;
    settle(&f, None, 3).await;
    f.wait_ready("Ready at 3 control-plane nodes").await;

    // A pool 3 → 5 → 1 → 0.
    for replicas in [5, 1, 0] {
        f.update(|s| s.workers[0].replicas = Some(replicas)).await;
        settle(&f, Some("work"), usize::try_from(replicas).unwrap()).await;
        f.wait_ready("Ready after scaling the pool").await;
        let md = machine_deployment(&f, "work").await.expect("pool exists");
        assert_eq!(md.data["spec"]["replicas"], replicas);
        // The reported counts follow (the report that says Ready may precede the last
        // machine's count by one status write).
        wait_for_status(
            &f.clusters().await,
            &f.name,
            "reporting the pool's size",
            |s| {
                s.phase.as_deref() == Some("Ready")
                    && s.pools.get("work").map(|c| (c.ready, c.desired))
                        == Some((replicas, replicas))
            },
        )
        .await;
    }

    // Add a pool, then remove it: its MachineDeployment, templates and machines go away.
    f.update(|s| s.workers.push(pool("extra", 2))).await;
    settle(&f, Some("extra"), 2).await;
    f.wait_ready("Ready with the extra pool").await;
    f.update(|s| s.workers.retain(|p| p.name != "extra")).await;
    settle(&f, Some("extra"), 0).await;
    let client = f.workload().await;
    eventually("the extra pool's objects are gone", || {
        let client = client.clone();
        let name = f.name.clone();
        async move {
            let md = dynamic(
                &client,
                TENANT,
                "cluster.x-k8s.io",
                "v1beta2",
                "MachineDeployment",
            )
            .get_opt(&format!("{name}-extra"))
            .await
            .ok()?;
            let templates = dynamic(
                &client,
                TENANT,
                "infrastructure.cluster.x-k8s.io",
                "v1beta2",
                "VSphereMachineTemplate",
            )
            .list(&ListParams::default())
            .await
            .ok()?;
            let extra_templates = templates
                .items
                .iter()
                .filter(|t| {
                    t.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(&format!("{name}-extra-")))
                })
                .count();
            (md.is_none() && extra_templates == 0).then_some(())
        }
    })
    .await;
    let ready = f.wait_ready("Ready after removing the pool").await;
    assert!(!ready.status.expect("status").pools.contains_key("extra"));
}

/// Every state of every Machine seen by a watch, for ordering assertions.
#[derive(Default)]
struct MachineLog {
    /// name → (control plane?, version, deleting?), latest state.
    live: BTreeMap<String, (bool, String, bool)>,
    /// Violations of "no worker on the new version before the control plane is done".
    violations: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_upgrade_rolls_the_control_plane_first_and_os_upgrade_only_the_pool() {
    let f = Fixture::ready("upgrade", 200, |spec| {
        spec.workers = vec![pool("work", 2)];
    })
    .await;
    let cp_before = settle(&f, None, 1).await;
    let workers_before = settle(&f, Some("work"), 2).await;
    let new_version = "v1.33.2";

    // Watch every Machine while upgrading: a worker on the new version while a control-plane
    // machine still runs the old one is a violation of the upgrade order.
    let log = Arc::new(Mutex::new(MachineLog::default()));
    let watcher = {
        let api = machines(&f.workload().await);
        let log = log.clone();
        tokio::spawn(async move {
            let mut events = Box::pin(kube::runtime::watcher(api, Default::default()));
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                let mut log = log.lock().unwrap();
                match event {
                    kube::runtime::watcher::Event::Apply(m)
                    | kube::runtime::watcher::Event::InitApply(m) => {
                        let name = m.metadata.name.clone().unwrap_or_default();
                        log.live.insert(
                            name,
                            (is_control_plane(&m), machine_version(&m), is_deleting(&m)),
                        );
                    }
                    kube::runtime::watcher::Event::Delete(m) => {
                        log.live
                            .remove(&m.metadata.name.clone().unwrap_or_default());
                    }
                    _ => {}
                }
                let old_cp: Vec<String> = log
                    .live
                    .iter()
                    .filter(|(_, (cp, v, deleting))| *cp && v != new_version && !deleting)
                    .map(|(n, _)| n.clone())
                    .collect();
                let new_workers: Vec<String> = log
                    .live
                    .iter()
                    .filter(|(_, (cp, v, _))| !*cp && v == new_version)
                    .map(|(n, _)| n.clone())
                    .collect();
                if !old_cp.is_empty() && !new_workers.is_empty() {
                    let violation =
                        format!("workers {new_workers:?} upgraded while {old_cp:?} old");
                    log.violations.push(violation);
                }
            }
        })
    };

    f.update(|s| {
        s.kubernetes_version = new_version.into();
        s.infrastructure.vsphere.as_mut().expect("vsphere").template =
            "ubuntu-2404-kube-v1.33.2".into();
    })
    .await;
    let ready = f.wait_ready("Ready on the new version").await;
    let cp_after = settle(&f, None, 1).await;
    let workers_after = settle(&f, Some("work"), 2).await;
    watcher.abort();
    {
        let log = log.lock().unwrap();
        assert!(log.violations.is_empty(), "{:?}", log.violations);
        assert!(
            log.live
                .values()
                .filter(|(_, _, deleting)| !deleting)
                .all(|(_, v, _)| v == new_version),
            "{:?}",
            log.live
        );
    }
    assert!(cp_after.iter().all(|m| !cp_before.contains(m)));
    assert!(workers_after.iter().all(|m| !workers_before.contains(m)));
    assert_eq!(kcp(&f).await.data["spec"]["version"], new_version);
    let status = ready.status.expect("status");
    assert_eq!(
        status.control_plane.and_then(|c| c.version).as_deref(),
        Some(new_version)
    );
    assert_eq!(
        status.pools.get("work").and_then(|c| c.version.as_deref()),
        Some(new_version)
    );

    // OS upgrade of the pool only: a new content-hashed VSphereMachineTemplate and exactly the
    // pool's machines replaced; the control plane keeps its machine.
    let md_before = machine_deployment(&f, "work").await.expect("pool");
    let template_before = md_before.data["spec"]["template"]["spec"]["infrastructureRef"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    f.update(|s| s.workers[0].template = Some("ubuntu-2404-hardened-v1.33.2".into()))
        .await;
    f.wait_ready("Ready after the OS upgrade").await;
    let workers_os = settle(&f, Some("work"), 2).await;
    assert_eq!(
        settle(&f, None, 1).await,
        cp_after,
        "the control plane was not touched"
    );
    assert!(workers_os.iter().all(|m| !workers_after.contains(m)));
    let md_after = machine_deployment(&f, "work").await.expect("pool");
    let template_after = md_after.data["spec"]["template"]["spec"]["infrastructureRef"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(template_before, template_after);
    assert!(template_after.starts_with(&format!("{}-work-", f.name)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaler_owns_replicas_offline_and_cert_rotation_replaces_every_machine() {
    let mut f = Fixture::ready("autoscaled", 200, |spec| {
        let mut p = pool("elastic", 1);
        p.replicas = None;
        p.autoscaling = Some(Autoscaling {
            min_replicas: 1,
            max_replicas: 4,
        });
        spec.workers = vec![p];
    })
    .await;
    settle(&f, Some("elastic"), 1).await;
    let md = machine_deployment(&f, "elastic").await.expect("pool");
    let annotations = md.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get(names::AUTOSCALER_MIN_SIZE_ANNOTATION)
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        annotations
            .get(names::AUTOSCALER_MAX_SIZE_ANNOTATION)
            .map(String::as_str),
        Some("4")
    );

    // The management plane goes away; the autoscaler (another field manager in the workload
    // cluster) scales the pool to 3, and the agent must leave that alone.
    f.world.kill_manager(0).await;
    let client = f.workload().await;
    let mds = dynamic(
        &client,
        TENANT,
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineDeployment",
    );
    let md_name = format!("{}-elastic", f.name);
    mds.patch(
        &md_name,
        &PatchParams::apply("cluster-autoscaler").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "MachineDeployment",
            "metadata": {"name": md_name, "namespace": TENANT},
            "spec": {"replicas": 3},
        })),
    )
    .await
    .expect("the autoscaler scales the pool");
    settle(&f, Some("elastic"), 3).await;
    // Prove the agent reconciled since: delete its MachineHealthCheck and wait for it to come
    // back; the replicas must still be the autoscaler's.
    let mhcs = dynamic(
        &client,
        TENANT,
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineHealthCheck",
    );
    let mhc_name = mhcs
        .list(&ListParams::default())
        .await
        .expect("list MHCs")
        .items
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .find(|n| n.contains("elastic"))
        .expect("the pool has a MachineHealthCheck");
    let uid_before = mhcs.get(&mhc_name).await.expect("mhc").metadata.uid;
    mhcs.delete(&mhc_name, &Default::default())
        .await
        .expect("delete the MHC");
    eventually("the agent restores the MachineHealthCheck", || {
        let mhcs = mhcs.clone();
        let mhc_name = mhc_name.clone();
        let uid_before = uid_before.clone();
        async move {
            let mhc = mhcs.get_opt(&mhc_name).await.ok()??;
            (mhc.metadata.uid != uid_before).then_some(())
        }
    })
    .await;
    let md = mds.get(&md_name).await.expect("md");
    assert_eq!(
        md.data["spec"]["replicas"], 3,
        "the agent reverted the autoscaler"
    );
    for entry in md.metadata.managed_fields.iter().flatten() {
        if entry.manager.as_deref() == Some(names::AGENT_FIELD_MANAGER) {
            let fields = entry
                .fields_v1
                .as_ref()
                .map(|f| f.0.to_string())
                .unwrap_or_default();
            assert!(
                !fields.contains("\"f:replicas\""),
                "the agent owns spec.replicas: {fields}"
            );
        }
    }

    // Back online: rotate the certificates; every machine is replaced by a newer one.
    let restarted = f.world.restart_manager(0).await;
    f.manager = restarted;
    let before_cp = settle(&f, None, 1).await;
    let before_workers = settle(&f, Some("elastic"), 3).await;
    let rotate_after = chrono_now();
    f.update(|s| {
        s.certificates
            .get_or_insert(CertificatesSpec {
                renew_before_expiry_days: None,
                rotate_after: None,
            })
            .rotate_after = Some(rotate_after.clone());
    })
    .await;
    // The agent sets rollout.after on the control plane and on every MachineDeployment.
    eventually("rollout.after set on the KubeadmControlPlane", || {
        let f = &f;
        let want = rotate_after.clone();
        async move {
            let kcp = kcp(f).await;
            (kcp.data["spec"]["rollout"]["after"].as_str() == Some(want.as_str())).then_some(())
        }
    })
    .await;
    eventually("rollout.after set on the MachineDeployment", || {
        let mds = mds.clone();
        let md_name = md_name.clone();
        let want = rotate_after.clone();
        async move {
            let md = mds.get(&md_name).await.ok()?;
            (md.data["spec"]["rollout"]["after"].as_str() == Some(want.as_str())).then_some(())
        }
    })
    .await;
    let after_cp = eventually("control plane replaced", || {
        let f = &f;
        let before = before_cp.clone();
        async move {
            let now = settle(f, None, 1).await;
            now.iter().all(|m| !before.contains(m)).then_some(now)
        }
    })
    .await;
    let after_workers = eventually("workers replaced", || {
        let f = &f;
        let before = before_workers.clone();
        async move {
            let now = settle(f, Some("elastic"), 3).await;
            now.iter().all(|m| !before.contains(m)).then_some(now)
        }
    })
    .await;
    let all = machines(&client)
        .list(&ListParams::default())
        .await
        .expect("machines");
    let rotated_at: k8s_openapi::jiff::Timestamp = rotate_after.parse().expect("timestamp");
    for m in all.items.iter().filter(|m| {
        let n = m.metadata.name.clone().unwrap_or_default();
        after_cp.contains(&n) || after_workers.contains(&n)
    }) {
        let created = m.metadata.creation_timestamp.as_ref().expect("created").0;
        assert!(
            created >= rotated_at,
            "{:?} created {created} before {rotate_after}",
            m.metadata.name
        );
    }
    f.wait_ready("Ready after the rotation").await;
}

/// Now in RFC 3339 with second precision, as `rotate-certs` writes it.
fn chrono_now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
