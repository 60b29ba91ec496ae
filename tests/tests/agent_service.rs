//! The manager's side of the agent stream (`AgentService.Session`) against real manager
//! processes, with a test-side fake agent holding a client certificate from the world's CA.
//!
//! Managers run with `--no-provisioning` so that only the stream writes the status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fledge_core::names::spec_generation;
use fledge_core::proto::v1::agent_message::Message as Agent;
use fledge_core::proto::v1::manager_message::Message as Manager;
use fledge_core::proto::v1::{
    Ack, AddonStatus, ListClustersRequest, ReplicaCounts, StatusReport, UpdateClusterRequest,
};
use fledge_core::spec::{ClusterProfile, WorkloadCluster};
use fledge_e2e::{
    AgentBin, AgentCert, World, WorldOptions, authed, ensure_namespace, eventually,
    example_cluster, example_profiles, foreign_ca, hello, issue_agent_cert, sign_agent_cert,
    wait_for_status,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use tonic::Code;

const NS: &str = "team-a";
const DAY: Duration = Duration::from_secs(24 * 3600);

async fn world() -> World {
    World::start(WorldOptions {
        controllers: false,
        agent: AgentBin::Fake,
        ..Default::default()
    })
    .await
}

/// Creates the example's profile and a cluster `name` in [`NS`]; returns the stored cluster.
async fn create_cluster(world: &World, name: &str) -> WorkloadCluster {
    let kube = world.kube().await;
    ensure_namespace(&kube, NS).await;
    let profiles: Api<ClusterProfile> = Api::namespaced(kube.clone(), NS);
    for profile in example_profiles("edge-1.yaml", NS) {
        match profiles.create(&PostParams::default(), &profile).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => panic!("creating profile: {err}"),
        }
    }
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube, NS);
    clusters
        .create(
            &PostParams::default(),
            &example_cluster("edge-1.yaml", NS, name),
        )
        .await
        .expect("create cluster")
}

async fn generation_of(world: &World, cluster: &WorkloadCluster) -> i64 {
    let profiles: Api<ClusterProfile> = Api::namespaced(world.kube().await, NS);
    let profile = profiles
        .get(
            cluster
                .spec
                .profile
                .as_deref()
                .expect("example has a profile"),
        )
        .await
        .expect("profile");
    spec_generation(
        cluster.metadata.generation.expect("generation"),
        profile.metadata.generation.expect("generation"),
    )
}

fn cert_for(world: &World, cluster: &WorkloadCluster) -> AgentCert {
    issue_agent_cert(
        &world.tls_dir(),
        NS,
        &cluster.name_any(),
        &cluster.uid().expect("uid"),
        DAY,
    )
}

fn hello_for(cluster: &WorkloadCluster, applied: i64) -> fledge_core::proto::v1::AgentMessage {
    hello(
        NS,
        &cluster.name_any(),
        &cluster.uid().expect("uid"),
        applied,
    )
}

#[tokio::test]
async fn hello_gets_the_spec_and_acks_and_reports_land_in_status() {
    let mut world = world().await;
    world
        .start_manager_with("manager-a", &["--no-provisioning"], &[])
        .await;
    let cluster = create_cluster(&world, "edge-1").await;
    let generation = generation_of(&world, &cluster).await;
    let cert = cert_for(&world, &cluster);
    let clusters: Api<WorkloadCluster> = Api::namespaced(world.kube().await, NS);

    let mut agent = world
        .fake_agent(0, Some(&cert), hello_for(&cluster, 0))
        .await
        .expect("stream accepted");
    let Manager::Spec(update) = agent.next().await else {
        panic!("the first message is the spec");
    };
    assert_eq!(update.generation, generation);
    assert!(!update.deleting);
    let spec = update.spec.expect("spec");
    assert_eq!(spec.kubernetes_version, cluster.spec.kubernetes_version);
    assert!(update.profile.is_some(), "the profile comes with the spec");
    wait_for_status(&clusters, "edge-1", "connected", |s| {
        s.agent
            .as_ref()
            .is_some_and(|a| a.connected && a.version.as_deref() == Some("fake-1"))
    })
    .await;

    agent.send(Agent::Ack(Ack { generation }));
    wait_for_status(&clusters, "edge-1", "acknowledged", |s| {
        s.agent.as_ref().and_then(|a| a.applied_generation) == Some(generation)
    })
    .await;

    agent.send(Agent::Status(StatusReport {
        phase: "Progressing".into(),
        message: "scaling the control plane".into(),
        applied_generation: generation,
        control_plane: Some(ReplicaCounts {
            ready: 1,
            desired: 3,
            version: "v1.31.4".into(),
        }),
        pools: [
            (
                "general".to_string(),
                ReplicaCounts {
                    ready: 2,
                    desired: 3,
                    version: String::new(),
                },
            ),
            (
                "batch".to_string(),
                ReplicaCounts {
                    ready: 1,
                    desired: 2,
                    version: String::new(),
                },
            ),
        ]
        .into(),
        addons: vec![AddonStatus {
            name: "cni".into(),
            state: "Healthy".into(),
            message: String::new(),
            applied_at: None,
        }],
        digest: "digest-1".into(),
        ..Default::default()
    }));
    let stored = wait_for_status(&clusters, "edge-1", "reported", |s| {
        s.agent.as_ref().and_then(|a| a.status_digest.as_deref()) == Some("digest-1")
    })
    .await;
    let status = stored.status.expect("status");
    let agent_status = status.agent.expect("agent");
    assert_eq!(agent_status.reported_phase.as_deref(), Some("Progressing"));
    assert_eq!(
        agent_status.reported_message.as_deref(),
        Some("scaling the control plane")
    );
    assert_eq!(
        status.control_plane.as_ref().map(|c| (c.ready, c.desired)),
        Some((1, 3))
    );
    assert_eq!(
        status.workers.as_ref().map(|c| (c.ready, c.desired)),
        Some((3, 5))
    );
    assert_eq!(status.pools.len(), 2);
    assert_eq!(status.addons.len(), 1);
    assert_eq!(status.addons[0].state, "Healthy");
    assert_eq!(status.phase, None, "the stream never writes the phase");
    assert!(
        status.conditions.is_empty(),
        "the stream never writes conditions"
    );

    // Disconnect: the replica records it.
    drop(agent);
    wait_for_status(&clusters, "edge-1", "disconnected", |s| {
        s.agent.as_ref().is_some_and(|a| !a.connected)
    })
    .await;

    // Reconnect with the current generation: no SpecUpdate. The manager sends a pending spec
    // before anything else, so the first message being a heartbeat proves there is none.
    let mut agent = world
        .fake_agent(0, Some(&cert), hello_for(&cluster, generation))
        .await
        .expect("stream accepted");
    let first = agent
        .rx
        .message()
        .await
        .expect("stream open")
        .and_then(|m| m.message)
        .expect("a message");
    assert!(
        matches!(first, Manager::Heartbeat(_)),
        "expected only a heartbeat, got {first:?}"
    );
    wait_for_status(&clusters, "edge-1", "connected again", |s| {
        s.agent.as_ref().is_some_and(|a| a.connected)
    })
    .await;

    // Shutdown: the manager tells its agents to go away (and reconnect elsewhere).
    world.stop_manager(0).await;
    let go_away = agent.next_within(fledge_e2e::DEADLINE).await;
    assert!(
        matches!(go_away, Ok(Some(Manager::GoAway(ref g))) if g.reconnect_after_seconds > 0),
        "expected a GoAway, got {go_away:?}"
    );
}

#[tokio::test]
async fn a_spec_update_through_one_replica_reaches_an_agent_on_another() {
    let mut world = world().await;
    let a = world
        .start_manager_with("manager-a", &["--no-provisioning"], &[])
        .await;
    let b = world
        .start_manager_with("manager-b", &["--no-provisioning"], &[])
        .await;
    let cluster = create_cluster(&world, "edge-2").await;
    let generation = generation_of(&world, &cluster).await;
    let cert = cert_for(&world, &cluster);
    let mut agent = world
        .fake_agent(b, Some(&cert), hello_for(&cluster, generation))
        .await
        .expect("stream accepted on replica B");
    let clusters: Api<WorkloadCluster> = Api::namespaced(world.kube().await, NS);
    wait_for_status(&clusters, "edge-2", "connected", |s| {
        s.agent.as_ref().is_some_and(|a| a.connected)
    })
    .await;

    let mut spec: fledge_core::proto::v1::ClusterSpec = (&cluster.spec).into();
    spec.workers[0].replicas = Some(spec.workers[0].replicas.unwrap_or(1) + 1);
    let mut grpc = world.grpc(a).await;
    grpc.update_cluster(authed(
        UpdateClusterRequest {
            name: "edge-2".into(),
            spec: Some(spec.clone()),
            expected_generation: cluster.metadata.generation.expect("generation"),
        },
        "token-a",
    ))
    .await
    .expect("update through replica A");

    let Manager::Spec(update) = agent.next().await else {
        panic!("replica B pushes the new spec");
    };
    assert!(update.generation > generation);
    let stored = clusters.get("edge-2").await.expect("cluster");
    assert_eq!(update.generation, generation_of(&world, &stored).await);
    assert_eq!(
        update.spec.expect("spec").workers[0].replicas,
        spec.workers[0].replicas
    );
    // Deleting the cluster: the agent is told (same generation, `deleting` set).
    clusters
        .patch(
            "edge-2",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"metadata": {"finalizers": ["test.fledge.dev/hold"]}}),
            ),
        )
        .await
        .expect("add a finalizer");
    clusters
        .delete("edge-2", &DeleteParams::default())
        .await
        .expect("delete");
    let deleting = loop {
        let Manager::Spec(update) = agent.next().await else {
            panic!("expected a SpecUpdate");
        };
        if update.deleting {
            break update;
        }
    };
    assert!(deleting.spec.is_some());

    // The stream's logs name the cluster (span field) and never carry key material.
    let log = world.manager_log(b);
    assert!(log.contains("cluster=team-a/edge-2"), "{log}");
    assert!(!log.contains("PRIVATE KEY") && !log.contains("BEGIN CERTIFICATE"));
}

#[tokio::test]
async fn bad_callers_are_refused_and_nothing_in_status_changes() {
    let mut world = world().await;
    world
        .start_manager_with("manager-a", &["--no-provisioning"], &[])
        .await;
    let x = create_cluster(&world, "cluster-x").await;
    let y = create_cluster(&world, "cluster-y").await;
    let clusters: Api<WorkloadCluster> = Api::namespaced(world.kube().await, NS);

    // No client certificate.
    let err = world
        .fake_agent(0, None, hello_for(&x, 0))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // X's certificate with a Hello for Y.
    let cert_x = cert_for(&world, &x);
    let err = world
        .fake_agent(0, Some(&cert_x), hello_for(&y, 0))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A certificate for a cluster that does not exist.
    let ghost = issue_agent_cert(&world.tls_dir(), NS, "ghost", "uid-0", DAY);
    let err = world
        .fake_agent(0, Some(&ghost), hello(NS, "ghost", "uid-0", 0))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A certificate not issued by the manager CA: the TLS handshake fails, so the call fails
    // at the transport (never with an application status such as NotFound or OK).
    let foreign = sign_agent_cert(&foreign_ca(), NS, "cluster-x", &x.uid().expect("uid"), DAY);
    let err = world
        .fake_agent(0, Some(&foreign), hello_for(&x, 0))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "a handshake failure, got {err:?}"
    );

    // A certificate with a stale uid: the cluster was deleted and recreated.
    clusters
        .delete("cluster-y", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("cluster-y is gone", || async {
        clusters
            .get_opt("cluster-y")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let stale_cert = cert_for(&world, &y);
    let recreated = create_cluster(&world, "cluster-y").await;
    assert_ne!(recreated.uid(), y.uid());
    let err = world
        .fake_agent(0, Some(&stale_cert), hello_for(&y, 0))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    for name in ["cluster-x", "cluster-y"] {
        let stored = clusters.get(name).await.expect("cluster");
        assert_eq!(stored.status, None, "{name}: a refused call wrote status");
    }
}

#[tokio::test]
async fn an_agent_certificate_near_expiry_is_renewed_on_the_stream() {
    let mut world = world().await;
    // Certificates expiring within 2 h are renewed; the test's certificate lives 1 h.
    world
        .start_manager_with(
            "manager-a",
            &[
                "--no-provisioning",
                "--agent-cert-renew-before",
                "2h",
                "--agent-cert-validity",
                "3h",
            ],
            &[],
        )
        .await;
    let cluster = create_cluster(&world, "edge-3").await;
    let generation = generation_of(&world, &cluster).await;
    let short = issue_agent_cert(
        &world.tls_dir(),
        NS,
        "edge-3",
        &cluster.uid().expect("uid"),
        Duration::from_secs(3600),
    );
    let mut agent = world
        .fake_agent(0, Some(&short), hello_for(&cluster, generation))
        .await
        .expect("stream accepted");
    let Manager::Certificate(renewal) = agent.next().await else {
        panic!("expected a CertificateRenewal");
    };
    assert!(
        renewal
            .certificate_pem
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(renewal.private_key_pem.contains("PRIVATE KEY"));
    let not_after = renewal.not_after.expect("not_after").seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        not_after > i64::try_from(now + 3600).expect("fits"),
        "renewed for longer"
    );

    // The renewed certificate verifies and names this cluster: the manager checks the chain
    // (TLS), the cluster (Hello) and the uid, and accepts a new stream with it. It expires in
    // 3 h, outside the 2 h window, so it is not renewed again.
    drop(agent);
    let renewed = AgentCert {
        cert_pem: renewal.certificate_pem,
        key_pem: renewal.private_key_pem,
    };
    let mut agent = world
        .fake_agent(0, Some(&renewed), hello_for(&cluster, generation))
        .await
        .expect("the renewed certificate is accepted");
    let first = agent
        .rx
        .message()
        .await
        .expect("stream open")
        .and_then(|m| m.message)
        .expect("a message");
    assert!(
        matches!(first, Manager::Heartbeat(_)),
        "no second renewal, got {first:?}"
    );
}

#[tokio::test]
async fn tokens_from_a_secret_are_reloaded_without_restart() {
    let mut world = world().await;
    let kube = world.kube().await;
    ensure_namespace(&kube, NS).await;
    world
        .start_manager_with(
            "manager-a",
            &[
                "--no-provisioning",
                "--tokens-secret",
                "team-a/fledge-tokens",
            ],
            &[],
        )
        .await;
    let list = |token: &'static str| {
        let world = &world;
        async move {
            let mut grpc = world.grpc(0).await;
            grpc.list_clusters(authed(ListClustersRequest::default(), token))
                .await
                .map(|_| ())
                .map_err(|status| status.code())
        }
    };
    assert_eq!(list("token-new").await, Err(Code::Unauthenticated));
    // The file's tokens keep working alongside the Secret's.
    assert_eq!(list("token-a").await, Ok(()));

    let secrets: Api<Secret> = Api::namespaced(kube, NS);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fledge-tokens", "namespace": NS},
        "stringData": {"tokens": "# added at runtime\ntoken-new team-a\n"},
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    eventually("the Secret's token works", || async {
        (list("token-new").await == Ok(())).then_some(())
    })
    .await;

    // Replace the Secret's tokens: the runtime token is removed, another one added.
    let mut stored = secrets.get("fledge-tokens").await.expect("secret");
    stored.string_data = None;
    stored.data = Some(
        [(
            "tokens".to_string(),
            k8s_openapi::ByteString(b"other-token team-b\n".to_vec()),
        )]
        .into(),
    );
    secrets
        .replace("fledge-tokens", &PostParams::default(), &stored)
        .await
        .expect("update secret");
    eventually("the removed token is refused", || async {
        (list("token-new").await == Err(Code::Unauthenticated)).then_some(())
    })
    .await;
    assert_eq!(list("other-token").await, Ok(()));
    let log = world.manager_log(0);
    assert!(
        !log.contains("token-new") && !log.contains("other-token"),
        "tokens in the log"
    );
}

#[tokio::test]
async fn a_silent_agent_is_declared_dead_after_three_heartbeats() {
    let mut world = world().await;
    world
        .start_manager_with("manager-a", &["--no-provisioning"], &[])
        .await;
    let cluster = create_cluster(&world, "edge-4").await;
    let generation = generation_of(&world, &cluster).await;
    let cert = cert_for(&world, &cluster);
    let clusters: Api<WorkloadCluster> = Api::namespaced(world.kube().await, NS);
    let mut first = world
        .fake_agent(0, Some(&cert), hello_for(&cluster, generation))
        .await
        .expect("stream accepted");
    wait_for_status(&clusters, "edge-4", "connected", |s| {
        s.agent.as_ref().is_some_and(|a| a.connected)
    })
    .await;
    // A second stream of the same cluster replaces the first, which ends cleanly and does not
    // mark the cluster disconnected.
    // The second fake agent keeps its connection open but never sends a heartbeat.
    let mut agent = world
        .fake_agent(0, Some(&cert), hello_for(&cluster, generation))
        .await
        .expect("stream accepted");
    let first_end = loop {
        match first.rx.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(first_end, Ok(None)), "{first_end:?}");
    let stored = clusters.get("edge-4").await.expect("cluster");
    assert!(
        stored
            .status
            .and_then(|s| s.agent)
            .is_some_and(|a| a.connected),
        "the replaced stream must not mark the cluster disconnected"
    );
    let end = loop {
        match agent.rx.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = end.expect_err("the manager ends the stream with an error");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    wait_for_status(&clusters, "edge-4", "disconnected", |s| {
        s.agent.as_ref().is_some_and(|a| !a.connected)
    })
    .await;
}
