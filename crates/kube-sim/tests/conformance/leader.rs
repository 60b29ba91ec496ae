//! Lease-based leader election between two clients, with optimistic concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::{TestServer, from_json, wait_for};

const LEASE: &str = "conformance-leader";
const DURATION_SECS: i32 = 2;

/// One round of the election: acquire a free or expired lease, or renew our own. Conflicts
/// (another candidate wrote first) mean "not leader this round".
async fn try_lead(api: &Api<Lease>, me: &str) -> kube::Result<bool> {
    let now = MicroTime(Timestamp::now());
    let Some(mut lease) = api.get_opt(LEASE).await? else {
        let fresh: Lease = from_json(json!({
            "metadata": {"name": LEASE},
            "spec": {"holderIdentity": me, "leaseDurationSeconds": DURATION_SECS, "leaseTransitions": 0}
        }));
        let mut fresh = fresh;
        let spec = fresh.spec.as_mut().unwrap();
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        return match api.create(&PostParams::default(), &fresh).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder != me {
        let renewed = spec
            .renew_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let duration = SignedDuration::from_secs(i64::from(
            spec.lease_duration_seconds.unwrap_or(DURATION_SECS),
        ));
        if renewed + duration > now.0 {
            return Ok(false);
        }
        spec.holder_identity = Some(me.to_owned());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
    // The resourceVersion from our read makes this a compare-and-swap.
    match api.replace(LEASE, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn candidate(
    api: Api<Lease>,
    me: &'static str,
    leading: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let lead = try_lead(&api, me).await.unwrap_or(false);
            leading.store(lead, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await; // The renew period, not a wait for state.
        }
    })
}

#[tokio::test]
async fn exactly_one_leader_then_failover() {
    let s = TestServer::start().await;
    let api_a: Api<Lease> = Api::namespaced(s.new_client().await, "default");
    let api_b: Api<Lease> = Api::namespaced(s.new_client().await, "default");
    let (lead_a, lead_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let task_a = candidate(api_a.clone(), "a", lead_a.clone());
    let task_b = candidate(api_b, "b", lead_b.clone());

    let holder = wait_for("a leader to be elected", async || {
        let lease = api_a.get_opt(LEASE).await.unwrap()?;
        let holder = lease.spec?.holder_identity?;
        let flags = (lead_a.load(Ordering::SeqCst), lead_b.load(Ordering::SeqCst));
        (flags == (holder == "a", holder == "b")).then_some(holder)
    })
    .await;

    // The leader keeps renewing and the follower never takes over while it does.
    let first = api_a.get(LEASE).await.unwrap().spec.unwrap();
    wait_for("the leader to renew", async || {
        let spec = api_a.get(LEASE).await.unwrap().spec.unwrap();
        assert_eq!(
            spec.holder_identity.as_deref(),
            Some(holder.as_str()),
            "no takeover while renewed"
        );
        assert!(
            !(lead_a.load(Ordering::SeqCst) && lead_b.load(Ordering::SeqCst)),
            "two leaders at once"
        );
        (spec.renew_time.map(|t| t.0) > first.renew_time.as_ref().map(|t| t.0)).then_some(())
    })
    .await;
    assert_eq!(first.lease_transitions, Some(0));

    // The leader stops renewing: the other candidate takes over once the lease expires.
    let (stopped, follower, follower_flag) = if holder == "a" {
        (task_a, "b", lead_b.clone())
    } else {
        (task_b, "a", lead_a.clone())
    };
    stopped.abort();
    let spec = wait_for("the follower to take over", async || {
        let spec = api_a.get(LEASE).await.unwrap().spec.unwrap();
        (spec.holder_identity.as_deref() == Some(follower) && follower_flag.load(Ordering::SeqCst))
            .then_some(spec)
    })
    .await;
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test]
async fn concurrent_creates_have_one_winner() {
    let s = TestServer::start().await;
    let api_a: Api<Lease> = Api::namespaced(s.new_client().await, "default");
    let api_b: Api<Lease> = Api::namespaced(s.new_client().await, "default");
    let (a, b) = tokio::join!(try_lead(&api_a, "a"), try_lead(&api_b, "b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one candidate wins (a={a}, b={b})");
}
