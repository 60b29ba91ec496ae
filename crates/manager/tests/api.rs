//! End-to-end tests of `fledge-manager serve` against `fledge-sim serve --no-controllers`,
//! both started as processes, with a tonic client that trusts the manager's CA.
//!
//! Each test owns its world (its own sim, manager and state directory), so tests run in
//! parallel without sharing names.

// Helpers outside `#[test]` functions fail the test the same way: with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fledge_core::proto::v1;
use fledge_core::proto::v1::cluster_service_client::ClusterServiceClient;
use fledge_core::spec::{ClusterProfile, WorkloadCluster};
use fledge_core::validate::{Document, load_and_validate};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};
use tonic_types::StatusExt;

/// Safety net for anything the world has to do; never a timing assertion.
const DEADLINE: Duration = Duration::from_secs(60);

const TOKENS: &str = "# test tokens\ntoken-a team-a\n\ntoken-b team-b\n";

/// One simulated management cluster plus one manager, killed on drop.
struct World {
    _dir: tempfile::TempDir,
    sim: Child,
    manager: Child,
    addr: String,
    ca_pem: String,
    kubeconfig: PathBuf,
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_fledge-manager"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls for a file; the sim announces readiness only by writing it.
async fn wait_for_file(path: &Path, child: &mut Child, what: &str) {
    let poll = async {
        while !path.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{what} exited with {status} before writing {}",
                    path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap_or_else(|_| panic!("{what} never wrote {}", path.display()));
}

impl World {
    async fn start() -> World {
        let sim_bin = bin_dir().join("fledge-sim");
        assert!(
            sim_bin.exists(),
            "{} is missing: run cargo build -p fledge-sim first",
            sim_bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("sim");
        let mut sim = Command::new(&sim_bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-controllers",
                "--state-dir",
            ])
            .arg(&state)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start fledge-sim");
        let kubeconfig = state.join("kubeconfig");
        wait_for_file(&kubeconfig, &mut sim, "fledge-sim").await;

        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, TOKENS).expect("write tokens");
        let tls_dir = dir.path().join("tls");
        let mut manager = Command::new(env!("CARGO_BIN_EXE_fledge-manager"))
            .args(["serve", "--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--tls-dir")
            .arg(&tls_dir)
            .arg("--tokens")
            .arg(&tokens)
            // These tests drive the API alone; tests/provision.rs covers the controller.
            .arg("--no-provisioning")
            .env("FLEDGE_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start fledge-manager");
        let stdout = manager.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("manager never printed its address")
            .expect("read stdout")
            .unwrap_or_else(|| panic!("manager exited early: {:?}", manager.try_wait()));
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let ca_pem = std::fs::read_to_string(tls_dir.join("ca.crt")).expect("ca.crt");
        World {
            _dir: dir,
            sim,
            manager,
            addr,
            ca_pem,
            kubeconfig,
        }
    }

    async fn channel(&self) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://{}", self.addr))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .expect("connect to the manager")
    }

    async fn client(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel().await)
    }

    async fn kube(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Stops the manager with SIGTERM and returns its exit code.
    async fn stop_manager(&mut self) -> Option<i32> {
        let pid = self.manager.id().expect("manager running");
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let status = tokio::time::timeout(DEADLINE, self.manager.wait())
            .await
            .expect("manager did not stop after SIGTERM")
            .expect("wait");
        status.code()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.sim.start_kill();
        let _ = self.manager.start_kill();
    }
}

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// The edge-1 example: its WorkloadCluster and its ClusterProfile.
fn edge_1() -> (WorkloadCluster, ClusterProfile) {
    let yaml = std::fs::read_to_string(repo_root().join("examples/edge-1.yaml")).expect("example");
    let docs = load_and_validate(&yaml).expect("example is valid");
    let mut cluster = None;
    let mut profile = None;
    for doc in docs {
        match doc {
            Document::WorkloadCluster(c) => cluster = Some(c),
            Document::ClusterProfile(p) => profile = Some(p),
        }
    }
    (cluster.expect("a cluster"), profile.expect("a profile"))
}

async fn next_event(events: &mut tonic::Streaming<v1::ClusterEvent>) -> v1::ClusterEvent {
    tokio::time::timeout(DEADLINE, events.message())
        .await
        .expect("no watch event before the deadline")
        .expect("watch stream error")
        .expect("watch stream ended")
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn cluster_lifecycle_over_grpc() {
    let world = World::start().await;
    let mut api = world.client().await;
    let (cluster, profile) = edge_1();
    let spec = v1::ClusterSpec::from(&cluster.spec);

    // The profile first: edge-1 refers to it.
    let created_profile = api
        .create_profile(authed(
            "token-a",
            v1::CreateProfileRequest {
                name: "standard".into(),
                spec: Some((&profile.spec).into()),
            },
        ))
        .await
        .expect("create profile")
        .into_inner();
    assert_eq!(created_profile.tenant, "team-a");

    let create = |spec: v1::ClusterSpec| {
        authed(
            "token-a",
            v1::CreateClusterRequest {
                name: "edge-1".into(),
                spec: Some(spec),
            },
        )
    };
    let created = api
        .create_cluster(create(spec.clone()))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(
        (
            created.name.as_str(),
            created.tenant.as_str(),
            created.generation
        ),
        ("edge-1", "team-a", 1)
    );
    assert!(!created.uid.is_empty());

    // Idempotent create returns the same object; a different spec is ALREADY_EXISTS.
    let again = api
        .create_cluster(create(spec.clone()))
        .await
        .expect("idempotent create")
        .into_inner();
    assert_eq!(again.uid, created.uid);
    let mut other_spec = spec.clone();
    other_spec.workers[0].replicas = Some(7);
    let err = api
        .create_cluster(create(other_spec))
        .await
        .expect_err("different spec");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Invalid spec: INVALID_ARGUMENT with the field path in BadRequest details.
    let mut invalid = spec.clone();
    invalid
        .control_plane
        .as_mut()
        .expect("control plane")
        .replicas = 2;
    let err = api
        .create_cluster(authed(
            "token-a",
            v1::CreateClusterRequest {
                name: "edge-2".into(),
                spec: Some(invalid),
            },
        ))
        .await
        .expect_err("invalid spec");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        violations(&err).contains(&"spec.controlPlane.replicas".to_string()),
        "{err:?}"
    );

    // An unknown profile names spec.profile.
    let mut unknown_profile = spec.clone();
    unknown_profile.profile = "nope".into();
    let err = api
        .create_cluster(authed(
            "token-a",
            v1::CreateClusterRequest {
                name: "edge-3".into(),
                spec: Some(unknown_profile),
            },
        ))
        .await
        .expect_err("unknown profile");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["spec.profile"]);

    // A cluster written directly into the management cluster is visible through the API.
    let kube = world.kube().await;
    let direct_api: kube::Api<WorkloadCluster> = kube::Api::namespaced(kube, "team-a");
    let mut direct = WorkloadCluster::new("direct-1", cluster.spec.clone());
    direct.metadata.namespace = Some("team-a".into());
    direct_api
        .create(&Default::default(), &direct)
        .await
        .expect("create with kube-rs");
    let got = api
        .get_cluster(authed(
            "token-a",
            v1::GetClusterRequest {
                name: "direct-1".into(),
            },
        ))
        .await
        .expect("get direct-1")
        .into_inner();
    assert_eq!(
        got.spec.as_ref().map(|s| s.kubernetes_version.as_str()),
        Some("v1.32.4")
    );

    // Paging: two clusters, one per page.
    let page1 = api
        .list_clusters(authed(
            "token-a",
            v1::ListClustersRequest {
                page_size: 1,
                page_token: String::new(),
            },
        ))
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(page1.clusters.len(), 1);
    assert!(!page1.next_page_token.is_empty());
    let page2 = api
        .list_clusters(authed(
            "token-a",
            v1::ListClustersRequest {
                page_size: 1,
                page_token: page1.next_page_token.clone(),
            },
        ))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(page2.clusters.len(), 1);
    assert!(page2.next_page_token.is_empty());
    let mut names: Vec<String> = page1
        .clusters
        .iter()
        .chain(&page2.clusters)
        .map(|c| c.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["direct-1", "edge-1"]);

    // Tenancy: another tenant sees nothing; no token is UNAUTHENTICATED.
    let err = api
        .get_cluster(authed(
            "token-b",
            v1::GetClusterRequest {
                name: "edge-1".into(),
            },
        ))
        .await
        .expect_err("other tenant");
    assert_eq!(err.code(), Code::NotFound);
    let listed_b = api
        .list_clusters(authed("token-b", v1::ListClustersRequest::default()))
        .await
        .expect("list as team-b")
        .into_inner();
    assert!(listed_b.clusters.is_empty());
    let err = api
        .get_cluster(Request::new(v1::GetClusterRequest {
            name: "edge-1".into(),
        }))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Kubeconfig: not there until the control plane exists.
    let err = api
        .get_kubeconfig(authed(
            "token-a",
            v1::GetKubeconfigRequest {
                name: "edge-1".into(),
            },
        ))
        .await
        .expect_err("no kubeconfig yet");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Watch: the current state first, then the update.
    let mut events = api
        .watch_cluster(authed(
            "token-a",
            v1::WatchClusterRequest {
                name: "edge-1".into(),
                since_revision: String::new(),
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    let first = next_event(&mut events).await;
    assert_eq!(first.r#type(), v1::cluster_event::Type::Updated);
    assert_eq!(first.cluster.as_ref().map(|c| c.generation), Some(1));

    // Update: a stale generation is ABORTED, the right one goes through.
    let mut scaled = spec.clone();
    scaled.workers[0].replicas = Some(5);
    let update = |generation: i64| {
        authed(
            "token-a",
            v1::UpdateClusterRequest {
                name: "edge-1".into(),
                spec: Some(scaled.clone()),
                expected_generation: generation,
            },
        )
    };
    let err = api
        .update_cluster(update(7))
        .await
        .expect_err("stale generation");
    assert_eq!(err.code(), Code::Aborted);
    let updated = api
        .update_cluster(update(1))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.generation, 2);
    let second = next_event(&mut events).await;
    assert_eq!(second.r#type(), v1::cluster_event::Type::Updated);
    assert_eq!(second.cluster.as_ref().map(|c| c.generation), Some(2));

    // The profile is in use: it cannot be deleted.
    let err = api
        .delete_profile(authed(
            "token-a",
            v1::DeleteProfileRequest {
                name: "standard".into(),
            },
        ))
        .await
        .expect_err("profile in use");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Delete: nothing holds a finalizer here (no controllers), so the watch ends with DELETED.
    api.delete_cluster(authed(
        "token-a",
        v1::DeleteClusterRequest {
            name: "edge-1".into(),
        },
    ))
    .await
    .expect("delete");
    let last = loop {
        let event = next_event(&mut events).await;
        if event.r#type() == v1::cluster_event::Type::Deleted {
            break event;
        }
    };
    assert_eq!(last.cluster.map(|c| c.name), Some("edge-1".to_string()));
    let err = api
        .get_cluster(authed(
            "token-a",
            v1::GetClusterRequest {
                name: "edge-1".into(),
            },
        ))
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound);

    // Profiles: a stale update is ABORTED; once no cluster uses it, delete goes through.
    let err = api
        .update_profile(authed(
            "token-a",
            v1::UpdateProfileRequest {
                name: "standard".into(),
                spec: Some((&profile.spec).into()),
                expected_generation: 9,
            },
        ))
        .await
        .expect_err("stale profile generation");
    assert_eq!(err.code(), Code::Aborted);
    api.delete_cluster(authed(
        "token-a",
        v1::DeleteClusterRequest {
            name: "direct-1".into(),
        },
    ))
    .await
    .expect("delete direct-1");
    api.delete_profile(authed(
        "token-a",
        v1::DeleteProfileRequest {
            name: "standard".into(),
        },
    ))
    .await
    .expect("delete unused profile");
    let profiles = api
        .list_profiles(authed("token-a", v1::ListProfilesRequest::default()))
        .await
        .expect("list profiles")
        .into_inner();
    assert!(profiles.profiles.is_empty(), "{profiles:?}");
}

#[tokio::test]
async fn health_reflection_limits_and_graceful_shutdown() {
    let mut world = World::start().await;
    let channel = world.channel().await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "fledge.v1.ClusterService".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("reflection reply")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection reply {response:?}");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        services.contains(&"fledge.v1.ClusterService".to_string()),
        "{services:?}"
    );

    // Oversized requests are refused before any handler runs.
    let mut api = ClusterServiceClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
    let err = api
        .create_cluster(authed(
            "token-a",
            v1::CreateClusterRequest {
                name: "x".repeat(5 * 1024 * 1024),
                spec: None,
            },
        ))
        .await
        .expect_err("oversized");
    // tonic reports an over-limit message as OUT_OF_RANGE.
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // The CRDs were installed and are served.
    let kube = world.kube().await;
    let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        kube::Api::all(kube);
    let crd = crds
        .get("workloadclusters.fledge.dev")
        .await
        .expect("CRD installed");
    let managers: Vec<String> = crd
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    assert!(
        managers.contains(&"fledge-manager".to_string()),
        "{managers:?}"
    );

    // Graceful shutdown: an open watch ends cleanly and the manager exits 0.
    let (cluster, profile) = edge_1();
    let mut api = world.client().await;
    api.create_profile(authed(
        "token-a",
        v1::CreateProfileRequest {
            name: "standard".into(),
            spec: Some((&profile.spec).into()),
        },
    ))
    .await
    .expect("create profile");
    api.create_cluster(authed(
        "token-a",
        v1::CreateClusterRequest {
            name: "edge-1".into(),
            spec: Some((&cluster.spec).into()),
        },
    ))
    .await
    .expect("create cluster");
    let mut events = api
        .watch_cluster(authed(
            "token-a",
            v1::WatchClusterRequest {
                name: "edge-1".into(),
                since_revision: String::new(),
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    next_event(&mut events).await;
    assert_eq!(world.stop_manager().await, Some(0));
    let end = tokio::time::timeout(DEADLINE, events.message())
        .await
        .expect("watch did not end on shutdown");
    assert!(matches!(end, Ok(None)), "watch ended with {end:?}");
}

#[tokio::test]
async fn kubeconfig_pivoting_and_day_2_rules() {
    let world = World::start().await;
    let mut api = world.client().await;
    let (cluster, profile) = edge_1();
    let spec = v1::ClusterSpec::from(&cluster.spec);
    api.create_profile(authed(
        "token-a",
        v1::CreateProfileRequest {
            name: "standard".into(),
            spec: Some((&profile.spec).into()),
        },
    ))
    .await
    .expect("create profile");
    let created = api
        .create_cluster(authed(
            "token-a",
            v1::CreateClusterRequest {
                name: "edge-1".into(),
                spec: Some(spec.clone()),
            },
        ))
        .await
        .expect("create cluster")
        .into_inner();

    // An empty name is INVALID_ARGUMENT, not a list of the collection.
    let err = api
        .get_cluster(authed(
            "token-a",
            v1::GetClusterRequest {
                name: String::new(),
            },
        ))
        .await
        .expect_err("empty name");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Day-2 rules: a Kubernetes downgrade is refused with its path.
    let mut downgrade = spec.clone();
    downgrade.kubernetes_version = "v1.31.0".into();
    let err = api
        .update_cluster(authed(
            "token-a",
            v1::UpdateClusterRequest {
                name: "edge-1".into(),
                spec: Some(downgrade),
                expected_generation: created.generation,
            },
        ))
        .await
        .expect_err("downgrade");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        violations(&err).contains(&"spec.kubernetesVersion".to_string()),
        "{err:?}"
    );

    // The kubeconfig Secret written by CAPI is returned as is.
    let kube = world.kube().await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(kube.clone(), "team-a");
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("edge-1-kubeconfig".into());
    secret.string_data = Some(
        [(
            "value".to_string(),
            "apiVersion: v1\nkind: Config\n".to_string(),
        )]
        .into(),
    );
    secrets
        .create(&Default::default(), &secret)
        .await
        .expect("create secret");
    let kubeconfig = api
        .get_kubeconfig(authed(
            "token-a",
            v1::GetKubeconfigRequest {
                name: "edge-1".into(),
            },
        ))
        .await
        .expect("kubeconfig")
        .into_inner();
    assert_eq!(kubeconfig.kubeconfig, "apiVersion: v1\nkind: Config\n");
    let err = api
        .get_kubeconfig(authed(
            "token-b",
            v1::GetKubeconfigRequest {
                name: "edge-1".into(),
            },
        ))
        .await
        .expect_err("other tenant");
    assert_eq!(err.code(), Code::NotFound);

    // Resuming a watch from a revision sends only later changes.
    let revision = created.revision.clone();
    let mut events = api
        .watch_cluster(authed(
            "token-a",
            v1::WatchClusterRequest {
                name: "edge-1".into(),
                since_revision: revision,
            },
        ))
        .await
        .expect("watch")
        .into_inner();

    // While Pivoting, a delete is refused and nothing changes.
    let clusters: kube::Api<WorkloadCluster> = kube::Api::namespaced(kube, "team-a");
    clusters
        .patch_status(
            "edge-1",
            &Default::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {"phase": "Pivoting"}})),
        )
        .await
        .expect("set phase");
    let event = next_event(&mut events).await;
    assert_eq!(
        event.cluster.and_then(|c| c.status).map(|s| s.phase),
        Some("Pivoting".to_string())
    );
    let err = api
        .delete_cluster(authed(
            "token-a",
            v1::DeleteClusterRequest {
                name: "edge-1".into(),
            },
        ))
        .await
        .expect_err("pivoting");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(clusters.get_opt("edge-1").await.expect("get").is_some());
}
