//! End-to-end tests of the provisioning pipeline: `fledge-sim serve` (with its CAPI/vSphere
//! controllers, sped up) and `fledge-manager serve`, both started as processes (the harness of
//! `tests/src/lib.rs`).
//!
//! Each test owns its world (sim, managers, state directory) and its cluster names.

// Helpers outside `#[test]` functions fail the test the same way: with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fledge_core::proto::v1;
use fledge_core::spec::WorkloadCluster;
use fledge_e2e::{
    AgentBin, DEADLINE, World, WorldOptions, client_from_kubeconfig, create_credentials, dynamic,
    ensure_namespace, example_cluster, record_phases, wait_for_status,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::runtime::wait::await_condition;
use tonic::Request;

/// A world whose node runtime runs a stand-in agent: these tests are about the manager.
async fn start_world(controllers: bool) -> World {
    World::start(WorldOptions {
        controllers,
        agent: AgentBin::Fake,
        ..Default::default()
    })
    .await
}

/// The single-node example's cluster, moved to `namespace` and renamed `name`.
fn single_node(namespace: &str, name: &str) -> WorkloadCluster {
    example_cluster("single-node.yaml", namespace, name)
}

fn managed_by_fledge(obj: &DynamicObject) -> bool {
    obj.metadata.managed_fields.iter().flatten().any(|m| {
        matches!(
            m.manager.as_deref(),
            Some("fledge-manager" | "fledge-pivot")
        )
    })
}

fn condition_message(cluster: &WorkloadCluster, type_: &str) -> Option<(String, String)> {
    cluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.message.clone()))
}

#[tokio::test]
async fn clusters_from_grpc_and_kube_rs_advance_to_installing_agent() {
    let mut world = start_world(true).await;
    world.start_manager("manager-a").await;
    let kube = world.kube().await;
    ensure_namespace(&kube, "team-a").await;
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube.clone(), "team-a");

    // Over gRPC: the single-node example in tenant team-a.
    let from_grpc = single_node("team-a", "single-node");
    let mut grpc = world.grpc(0).await;
    let mut request = Request::new(v1::CreateClusterRequest {
        name: "single-node".into(),
        spec: Some(v1::ClusterSpec::from(&from_grpc.spec)),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer token-a".parse().expect("ascii"));
    grpc.create_cluster(request)
        .await
        .expect("create over gRPC");
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(Vec::new());
    let recorder = tokio::spawn(record_phases(
        clusters.clone(),
        "single-node".into(),
        "InstallingAgent",
        seen_tx,
    ));

    // Without the credentials Secret, Bootstrapping waits and says why.
    let waiting = wait_for_status(&clusters, "single-node", "waiting for credentials", |s| {
        s.step.as_deref() == Some("CredentialsSecretMissing")
    })
    .await;
    assert_eq!(
        waiting.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bootstrapping")
    );
    assert!(
        waiting
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "fledge.dev/workload-cluster"),
        "{:?}",
        waiting.metadata.finalizers
    );

    // The recorder must have seen Bootstrapping before the Secret lets the cluster move on.
    tokio::time::timeout(
        DEADLINE,
        seen_rx.wait_for(|p| p.iter().any(|p| p == "Bootstrapping")),
    )
    .await
    .expect("the recorder never saw Bootstrapping")
    .expect("recorder alive");

    // Written with kube-rs directly: provisioned the same way.
    let mut direct = single_node("team-a", "direct-1");
    direct.spec.control_plane.endpoint.host = "10.20.0.11".into();
    clusters
        .create(&PostParams::default(), &direct)
        .await
        .expect("create with kube-rs");
    create_credentials(&kube, "team-a").await;

    let phases = recorder.await.expect("recorder");
    let want = [
        "Bootstrapping",
        "WaitingForControlPlane",
        "InstallingProviders",
        "InstallingAgent",
    ];
    let positions: Vec<Option<usize>> = want
        .iter()
        .map(|w| phases.iter().position(|p| p == w))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "phases seen {phases:?}"
    );
    // The stand-in agent never connects: the pipeline ends waiting for it, after the pivot.
    let done = wait_for_status(&clusters, "direct-1", "HandedOver", |s| {
        s.phase.as_deref() == Some("HandedOver") && s.step.as_deref() == Some("WaitingForAgent")
    })
    .await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.progress_percent),
        Some(95)
    );
    wait_for_status(&clusters, "single-node", "HandedOver", |s| {
        s.phase.as_deref() == Some("HandedOver")
    })
    .await;

    // After the pivot the management cluster keeps a copy of the workload kubeconfig.
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "team-a");
    let kubeconfig = secrets
        .get("single-node-fledge-kubeconfig")
        .await
        .expect("kubeconfig Secret");
    let value = kubeconfig
        .data
        .as_ref()
        .and_then(|d| d.get("value"))
        .expect("value key");
    let workload = client_from_kubeconfig(&String::from_utf8_lossy(&value.0)).await;

    // The bootstrap objects, applied by fledge-manager, now live in the workload cluster
    // (created there by the mover).
    for (group, version, kind, name) in [
        ("cluster.x-k8s.io", "v1beta2", "Cluster", "single-node"),
        (
            "infrastructure.cluster.x-k8s.io",
            "v1beta2",
            "VSphereCluster",
            "single-node",
        ),
        (
            "controlplane.cluster.x-k8s.io",
            "v1beta2",
            "KubeadmControlPlane",
            "single-node-control-plane",
        ),
    ] {
        let obj = dynamic(&workload, "team-a", group, version, kind)
            .get(name)
            .await
            .unwrap_or_else(|err| panic!("{kind} {name}: {err}"));
        assert!(
            managed_by_fledge(&obj),
            "{kind} {name} is not managed by fledge-manager"
        );
        assert_eq!(
            obj.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("fledge.dev/cluster"))
                .map(String::as_str),
            Some("single-node")
        );
    }

    // The workload cluster has the providers and the agent.
    let crds: Api<CustomResourceDefinition> = Api::all(workload.clone());
    for crd in [
        "clusters.cluster.x-k8s.io",
        "kubeadmcontrolplanes.controlplane.cluster.x-k8s.io",
        "kubeadmconfigs.bootstrap.cluster.x-k8s.io",
        "vsphereclusters.infrastructure.cluster.x-k8s.io",
        "providers.clusterctl.cluster.x-k8s.io",
    ] {
        assert!(
            crds.get_opt(crd).await.expect("read CRD").is_some(),
            "CRD {crd} missing in the workload cluster"
        );
    }
    for (namespace, deployment) in [
        ("capi-system", "capi-controller-manager"),
        (
            "capi-kubeadm-bootstrap-system",
            "capi-kubeadm-bootstrap-controller-manager",
        ),
        (
            "capi-kubeadm-control-plane-system",
            "capi-kubeadm-control-plane-controller-manager",
        ),
        ("capv-system", "capv-controller-manager"),
        ("fledge-system", "fledge-agent"),
    ] {
        let api: Api<Deployment> = Api::namespaced(workload.clone(), namespace);
        assert!(
            api.get_opt(deployment)
                .await
                .expect("read Deployment")
                .is_some(),
            "Deployment {namespace}/{deployment} missing in the workload cluster"
        );
    }
    let inventory = dynamic(
        &workload,
        "capv-system",
        "clusterctl.cluster.x-k8s.io",
        "v1alpha3",
        "Provider",
    )
    .get("infrastructure-vsphere")
    .await
    .expect("inventory entry in the workload cluster");
    assert_eq!(inventory.data["version"], "v1.17.0");
    let agent_sa: Api<ServiceAccount> = Api::namespaced(workload.clone(), "fledge-system");
    assert!(
        agent_sa
            .get_opt("fledge-agent")
            .await
            .expect("read SA")
            .is_some()
    );
    let identity: Api<Secret> = Api::namespaced(workload.clone(), "fledge-system");
    let identity = identity
        .get("fledge-agent-identity")
        .await
        .expect("agent identity Secret");
    let data = identity.data.unwrap_or_default();
    for key in ["tls.crt", "tls.key", "ca.crt", "endpoint"] {
        assert!(
            data.get(key).is_some_and(|v| !v.0.is_empty()),
            "identity Secret lacks {key}"
        );
    }
    let cert = String::from_utf8_lossy(&data["tls.crt"].0).to_string();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
}

/// Waits until the manager Lease's holder satisfies `cond`; returns the holder.
async fn wait_for_holder(leases: &Api<Lease>, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let condition = move |lease: Option<&Lease>| {
        lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| !h.is_empty() && cond(h))
    };
    match tokio::time::timeout(
        DEADLINE,
        await_condition(leases.clone(), "fledge-manager", condition),
    )
    .await
    {
        Ok(Ok(Some(lease))) => lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default(),
        other => panic!(
            "the Lease never got {what}: {other:?}; last seen {:?}",
            leases.get_opt("fledge-manager").await
        ),
    }
}

/// The manager (index into `hosts`) whose identity `holder` is.
fn holder_index(hosts: &[&str], holder: &str) -> usize {
    hosts
        .iter()
        .position(|h| holder.starts_with(&format!("{h}-")))
        .unwrap_or_else(|| panic!("holder {holder:?} is none of {hosts:?}"))
}

#[tokio::test]
async fn only_the_lease_holder_provisions_and_invalid_specs_get_nothing() {
    // No CAPI controllers: this test is about who writes, not about machines.
    let mut world = start_world(false).await;
    let hosts = ["manager-a", "manager-b", "manager-c"];
    for host in hosts {
        world.start_manager(host).await;
    }
    let kube = world.kube().await;
    ensure_namespace(&kube, "team-a").await;
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube.clone(), "team-a");

    // An invalid spec written with kube-rs: Invalid, the field error in a condition, no
    // finalizer, nothing rendered.
    let mut invalid = single_node("team-a", "bad-1");
    invalid.spec.control_plane.replicas = 2;
    clusters
        .create(&PostParams::default(), &invalid)
        .await
        .expect("the CRD schema accepts it");
    let got = wait_for_status(&clusters, "bad-1", "Invalid", |s| {
        s.phase.as_deref() == Some("Invalid")
    })
    .await;
    let (status, message) = condition_message(&got, "SpecValid").expect("SpecValid condition");
    assert_eq!(status, "False");
    assert!(message.contains("spec.controlPlane.replicas"), "{message}");
    assert!(got.metadata.finalizers.unwrap_or_default().is_empty());
    let capi = dynamic(&kube, "team-a", "cluster.x-k8s.io", "v1beta2", "Cluster");
    assert!(
        !matches!(capi.get_opt("bad-1").await, Ok(Some(_))),
        "a CAPI Cluster was rendered for an invalid spec"
    );

    // Exactly one manager holds the Lease and runs the controller.
    let started = "Starting the provisioning controller";
    let leases: Api<Lease> = Api::namespaced(kube.clone(), "fledge-system");
    let first = holder_index(
        &hosts,
        &wait_for_holder(&leases, "a holder", |_| true).await,
    );
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(
            world.manager_log(i).contains(started),
            i == first,
            "{host}: {}",
            world.manager_log(i)
        );
    }

    // The leader stops with SIGTERM: it releases the Lease and another replica takes over.
    world.stop_manager(first).await;
    let second = holder_index(
        &hosts,
        &wait_for_holder(&leases, "a new holder", |h| {
            !h.starts_with(&format!("{}-", hosts[first]))
        })
        .await,
    );
    let valid = single_node("team-a", "after-failover");
    clusters
        .create(&PostParams::default(), &valid)
        .await
        .expect("create");
    wait_for_status(
        &clusters,
        "after-failover",
        "waiting for credentials",
        |s| {
            s.phase.as_deref() == Some("Bootstrapping")
                && s.step.as_deref() == Some("CredentialsSecretMissing")
        },
    )
    .await;
    assert!(
        world.manager_log(second).contains(started),
        "{}",
        world.manager_log(second)
    );

    // The new leader dies without releasing (SIGKILL): the last replica takes over once the
    // Lease expires, and provisions.
    world.kill_manager(second).await;
    let third = holder_index(
        &hosts,
        &wait_for_holder(&leases, "the last replica", |h| {
            !h.starts_with(&format!("{}-", hosts[first]))
                && !h.starts_with(&format!("{}-", hosts[second]))
        })
        .await,
    );
    assert!(third != first && third != second);
    let another = single_node("team-a", "after-crash");
    clusters
        .create(&PostParams::default(), &another)
        .await
        .expect("create");
    wait_for_status(&clusters, "after-crash", "waiting for credentials", |s| {
        s.step.as_deref() == Some("CredentialsSecretMissing")
    })
    .await;
    assert!(
        world.manager_log(third).contains(started),
        "{}",
        world.manager_log(third)
    );
}
