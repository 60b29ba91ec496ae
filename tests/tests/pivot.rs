//! The pivot end to end: clusters created over gRPC reach the end of the pipeline with their
//! Cluster API objects moved into the workload cluster; a manager killed at every step
//! boundary converges to the same end state; a target API outage mid-move rolls back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use fledge_core::spec::WorkloadCluster;
use fledge_e2e::*;
use kube::Api;

fn pivot_figures(journal: &serde_json::Value) -> (usize, i64) {
    let objects = journal["objects"].as_array().map_or(0, Vec::len);
    let parse = |k: &str| {
        journal[k]
            .as_str()
            .and_then(chrono_like_millis)
            .unwrap_or_default()
    };
    (objects, parse("finishedAt") - parse("startedAt"))
}

/// Milliseconds of an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SS.mmmZ` within its day
/// (pivots never span midnight in these tests by more than their own duration).
fn chrono_like_millis(t: &str) -> Option<i64> {
    let time = t.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3_600_000 + m * 60_000 + (s * 1000.0) as i64)
}

async fn wait_handed_over(world: &World, name: &str) {
    let clusters: Api<WorkloadCluster> = Api::namespaced(world.kube().await, "team-a");
    wait_for_status(&clusters, name, "HandedOver", |s| {
        s.phase.as_deref() == Some("HandedOver")
    })
    .await;
}

#[tokio::test]
async fn examples_pivot_into_their_workload_clusters() {
    let mut world = World::start(WorldOptions {
        agent: AgentBin::Fake,
        ..Default::default()
    })
    .await;
    world.start_manager("manager-a").await;
    for (file, name) in [
        ("single-node.yaml", "single-node"),
        ("edge-1.yaml", "edge-1"),
    ] {
        let started = Instant::now();
        create_example_over_grpc(&world, 0, file, name).await;
        wait_handed_over(&world, name).await;
        let journal = assert_pivoted(&world, name).await;
        let (objects, millis) = pivot_figures(&journal);
        let clusters: Api<WorkloadCluster> = Api::namespaced(world.kube().await, "team-a");
        let status = clusters
            .get(name)
            .await
            .expect("get")
            .status
            .expect("status");
        assert_eq!(status.step.as_deref(), Some("WaitingForAgent"));
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Pivoted" && c.status == "True"),
            "{status:?}"
        );
        // GetKubeconfig reads the management cluster's copy once the pivot moved the original.
        let mut grpc = world.grpc(0).await;
        let kubeconfig = grpc
            .get_kubeconfig(authed(
                fledge_core::proto::v1::GetKubeconfigRequest {
                    name: name.to_string(),
                },
                "token-a",
            ))
            .await
            .expect("GetKubeconfig after the pivot")
            .into_inner()
            .kubeconfig;
        let client = client_from_kubeconfig(&kubeconfig).await;
        assert!(client.apiserver_version().await.is_ok());
        eprintln!(
            "pivot {file}: {objects} objects in {millis} ms (create to HandedOver {:?})",
            started.elapsed()
        );
        bench_line(&serde_json::json!({
            "bench": "pivot", "example": file, "objects": objects,
            "pivot_ms": millis, "speed": 100,
            "create_to_handed_over_ms": started.elapsed().as_millis() as u64,
        }));
        assert!(objects > 10, "{objects}");
    }
}

/// Runs managers with the given kill points (point → cluster) until every point fired, then
/// one without; returns the points that fired.
async fn crash_through(
    world: &mut World,
    binary: &std::path::Path,
    plan: &[(String, String)],
    names: &[String],
) -> Vec<(String, String)> {
    let mut remaining: Vec<(String, String)> = plan.to_vec();
    let mut fired = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !remaining.is_empty() && Instant::now() < deadline {
        let spec = remaining
            .iter()
            .map(|(p, c)| format!("{p}=return({c})"))
            .collect::<Vec<_>>()
            .join(";");
        let index = start_manager_from(
            world,
            binary,
            "manager-kp",
            &[("FAILPOINTS", spec.as_str())],
        )
        .await;
        // Either it dies at a kill point, or every cluster gets through (a point not met).
        let clusters: Api<WorkloadCluster> = Api::namespaced(world.kube().await, "team-a");
        let all_done = async {
            loop {
                let mut done = true;
                for n in names {
                    let phase = clusters
                        .get_opt(n)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|c| c.status)
                        .and_then(|s| s.phase);
                    done &= phase.as_deref() == Some("HandedOver");
                }
                if done {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        let child = &mut world.managers[index].child;
        tokio::select! {
            _ = child.wait() => {}
            _ = all_done => {
                world.kill_manager(index).await;
            }
        }
        release_dead_leader(world).await;
        let now_fired = fired_kill_points(&world.manager_log(index));
        if now_fired.is_empty() {
            break;
        }
        for f in now_fired {
            remaining.retain(|r| *r != f);
            fired.push(f);
        }
    }
    fired
}

#[tokio::test]
async fn a_manager_killed_at_every_step_boundary_converges() {
    let points = kill_points("KILL_POINTS");
    assert!(points.len() >= 10, "{points:?}");
    let mut world = World::start(WorldOptions {
        agent: AgentBin::Fake,
        ..Default::default()
    })
    .await;
    let binary = kill_point_manager(&world);
    world.start_manager("manager-setup").await;
    let names: Vec<String> = (0..points.len()).map(|i| format!("kp-{i}")).collect();
    for name in &names {
        create_example_over_grpc(&world, 0, "single-node.yaml", name).await;
    }
    world.kill_manager(0).await;
    release_dead_leader(&world).await;
    let plan: Vec<(String, String)> = points.iter().cloned().zip(names.iter().cloned()).collect();
    let fired = crash_through(&mut world, &binary, &plan, &names).await;
    start_manager_from(&mut world, &binary, "manager-final", &[]).await;
    for name in &names {
        wait_handed_over(&world, name).await;
        assert_pivoted(&world, name).await;
    }
    let mut missing: Vec<&(String, String)> = plan.iter().filter(|p| !fired.contains(p)).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "kill points that never fired: {missing:?}"
    );
}

#[tokio::test]
async fn a_target_outage_mid_move_rolls_back_then_the_pivot_completes() {
    let mut world = World::start(WorldOptions {
        agent: AgentBin::Fake,
        ..Default::default()
    })
    .await;
    let binary = kill_point_manager(&world);
    start_manager_from(
        &mut world,
        &binary,
        "manager-a",
        &[
            // Holds the move for 3 s right after pausing the source: time to cut the target.
            ("FAILPOINTS", "pivot-after-pause=sleep(3000)"),
            ("FLEDGE_PIVOT_TARGET_TIMEOUT_SECONDS", "2"),
            ("FLEDGE_PIVOT_RETRY_SECONDS", "3"),
        ],
    )
    .await;
    create_example_over_grpc(&world, 0, "single-node.yaml", "outage").await;
    let kube = world.kube().await;
    // The source is paused (and the move sleeps 3 s there): cut the target's API.
    eventually("the move paused", || async {
        pivot_journal(&kube, "team-a", "outage")
            .await
            .filter(|j| j["state"] == "Paused")
    })
    .await;
    world
        .admin_ok("POST", "/v1/clusters/team-a/outage/api/stop", "")
        .await;
    let rolled = eventually("the rollback", || async {
        pivot_journal(&kube, "team-a", "outage")
            .await
            .filter(|j| j["state"] == "RolledBack")
    })
    .await;
    assert!(
        rolled["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unreachable")),
        "{rolled:#}"
    );
    // Rolled back: everything in the management cluster, unpaused, exactly one copy.
    let objects = capi_objects(&kube, "team-a", "outage").await;
    assert!(
        objects.contains(&"Cluster/outage".to_string()),
        "{objects:?}"
    );
    let cluster = dynamic(&kube, "team-a", "cluster.x-k8s.io", "v1beta2", "Cluster")
        .get("outage")
        .await
        .expect("Cluster");
    assert_ne!(cluster.data["spec"]["paused"], true);
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube.clone(), "team-a");
    let status = clusters
        .get("outage")
        .await
        .expect("get")
        .status
        .expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pivoting"), "{status:?}");
    // The target comes back: the retried pivot completes.
    world
        .admin_ok("POST", "/v1/clusters/team-a/outage/api/start", "")
        .await;
    wait_handed_over(&world, "outage").await;
    assert_pivoted(&world, "outage").await;
}
