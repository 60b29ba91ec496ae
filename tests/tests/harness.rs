//! The harness itself: a world starts, a manager serves, the admin endpoint answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fledge_e2e::{AgentBin, World, WorldOptions};

#[tokio::test]
async fn a_world_starts_with_a_manager_and_answers_admin_calls() {
    let mut world = World::start(WorldOptions {
        controllers: false,
        agent: AgentBin::Fake,
        ..Default::default()
    })
    .await;
    world.start_manager("manager-a").await;
    let health = world.admin_ok("GET", "/healthz", "").await;
    assert_eq!(health["ok"], true);
    let kube = world.kube().await;
    let version = kube.apiserver_version().await.expect("version");
    assert!(!version.git_version.is_empty());
    assert!(world.ca_pem().contains("BEGIN CERTIFICATE"));
}
