//! Deletion is a reverse pivot: a pivoted cluster deleted over gRPC moves its Cluster API
//! objects back into the management cluster, where Cluster API deletes the machines; nothing
//! is left in either cluster, and a manager killed mid-delete finishes after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fledge_core::proto::v1;
use fledge_core::spec::WorkloadCluster;
use fledge_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

async fn delete_over_grpc(world: &World, manager: usize, name: &str) {
    let mut grpc = world.grpc(manager).await;
    grpc.delete_cluster(authed(
        v1::DeleteClusterRequest {
            name: name.to_string(),
        },
        "token-a",
    ))
    .await
    .unwrap_or_else(|s| panic!("deleting {name}: {s}"));
}

/// Waits until the WorkloadCluster is gone, then asserts nothing of it is left.
async fn assert_gone(world: &World, name: &str, workload_kubeconfig: &str) {
    let kube = world.kube().await;
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube.clone(), "team-a");
    eventually(&format!("{name} deleted"), || async {
        clusters
            .get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let left = capi_objects(&kube, "team-a", name).await;
    assert!(
        left.is_empty(),
        "{name}: left in the management cluster: {left:?}"
    );
    assert!(
        pivot_journal(&kube, "team-a", name).await.is_none(),
        "{name}: journal left"
    );
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "team-a");
    for secret in [
        format!("{name}-fledge-kubeconfig"),
        format!("{name}-kubeconfig"),
        format!("{name}-ca"),
    ] {
        assert!(
            secrets.get_opt(&secret).await.expect("get").is_none(),
            "{name}: Secret {secret} left"
        );
    }
    // The workload cluster is gone with its machines: its API no longer answers, or (if the
    // world keeps it a moment) holds none of the cluster's CAPI objects.
    let workload = client_from_kubeconfig(workload_kubeconfig).await;
    let answered = tokio::time::timeout(Duration::from_secs(5), workload.apiserver_version()).await;
    if let Ok(Ok(_)) = answered {
        let moved = capi_objects(&workload, "team-a", name).await;
        assert!(
            moved.is_empty(),
            "{name}: left in the workload cluster: {moved:?}"
        );
    }
}

#[tokio::test]
async fn a_pivoted_cluster_is_deleted_through_a_reverse_pivot() {
    let mut world = World::start(WorldOptions {
        agent: AgentBin::Fake,
        ..Default::default()
    })
    .await;
    let binary = kill_point_manager(&world);
    start_manager_from(&mut world, &binary, "manager-a", &[]).await;
    let clusters: Api<WorkloadCluster> = Api::namespaced(world.kube().await, "team-a");
    let names = ["del-plain", "del-killed"];
    for name in names {
        create_example_over_grpc(&world, 0, "single-node.yaml", name).await;
    }
    for name in names {
        wait_for_status(&clusters, name, "HandedOver", |s| {
            s.phase.as_deref() == Some("HandedOver")
        })
        .await;
        assert_pivoted(&world, name).await;
    }
    let kubeconfigs: Vec<String> = names
        .iter()
        .map(|n| {
            std::fs::read_to_string(world.workload_kubeconfig("team-a", n)).expect("kubeconfig")
        })
        .collect();

    // Plain: delete over gRPC, wait until nothing is left.
    delete_over_grpc(&world, 0, "del-plain").await;
    wait_for_status(&clusters, "del-plain", "Deleting", |s| {
        s.phase.as_deref() == Some("Deleting")
    })
    .await;
    assert_gone(&world, "del-plain", &kubeconfigs[0]).await;

    // Killed at every step boundary of the deletion: the reverse move's and the deletion's
    // own kill points, one crash each, a restart after each; the last manager finishes.
    world.kill_manager(0).await;
    release_dead_leader(&world).await;
    let mut remaining: Vec<String> = kill_points("KILL_POINTS")
        .into_iter()
        .filter(|p| p.starts_with("pivot-") && p != "pivot-after-kubeconfig-copy")
        .chain(kill_points("DELETE_KILL_POINTS"))
        .collect();
    let all = remaining.clone();
    let mut fired = Vec::new();
    let mut deleted = false;
    let kube = world.kube().await;
    while !remaining.is_empty() {
        let spec = remaining
            .iter()
            .map(|p| format!("{p}=return(del-killed)"))
            .collect::<Vec<_>>()
            .join(";");
        let index = start_manager_from(
            &mut world,
            &binary,
            "manager-kill",
            &[("FAILPOINTS", spec.as_str())],
        )
        .await;
        if !deleted {
            delete_over_grpc(&world, index, "del-killed").await;
            deleted = true;
        }
        let gone = async {
            let clusters: Api<WorkloadCluster> = Api::namespaced(kube.clone(), "team-a");
            while clusters
                .get_opt("del-killed")
                .await
                .ok()
                .flatten()
                .is_some()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let child = &mut world.managers[index].child;
        tokio::select! {
            _ = child.wait() => {}
            _ = gone => {}
        }
        world.kill_manager(index).await;
        release_dead_leader(&world).await;
        let now = fired_kill_points(&world.manager_log(index));
        if now.is_empty() {
            break;
        }
        for (point, cluster) in now {
            assert_eq!(cluster, "del-killed");
            remaining.retain(|p| *p != point);
            fired.push(point);
        }
    }
    assert!(
        remaining.is_empty(),
        "never fired: {remaining:?} (fired {fired:?} of {all:?})"
    );
    start_manager_from(&mut world, &binary, "manager-final", &[]).await;
    assert_gone(&world, "del-killed", &kubeconfigs[1]).await;
}
