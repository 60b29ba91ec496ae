//! One active agent per cluster: the agent that holds Lease `fledge-system/fledge-agent`
//! reconciles and talks to the manager; another one (a replacement Pod started while the old
//! one still runs, e.g. after its node was lost) waits until the Lease expires.
//!
//! The holder identity is the Pod name (`HOSTNAME`), so a container restarted in the same Pod
//! (a crash, the sim's kill knob) takes its Lease back at once instead of waiting for it to
//! expire.

use std::sync::Arc;
use std::time::Duration;

use fledge_core::names;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::reconciler::Shared;

/// Name of the Lease.
pub const LEASE: &str = "fledge-agent";
/// How long a Lease is valid without renewal.
const DURATION: Duration = Duration::from_secs(20);
/// How often the holder renews (and a waiting agent retries).
const RENEW: Duration = Duration::from_secs(5);

/// This process's identity: the Pod name, or a made-up one outside a Pod.
pub fn identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("fledge-agent-{}", std::process::id()))
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// Acquires or renews the Lease; `Ok(false)` when another live agent holds it.
///
/// # Errors
/// The API's errors other than conflicts.
pub async fn try_acquire(api: &Api<Lease>, holder: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(DURATION.as_secs()).unwrap_or(20);
    let Some(mut lease) = api.get_opt(LEASE).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.to_owned()),
                namespace: Some(names::FLEDGE_NAMESPACE.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, 409) => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let current = spec.holder_identity.clone().unwrap_or_default();
    let mine = current == holder;
    if !mine && !current.is_empty() {
        let valid_for =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        let expires = spec
            .renew_time
            .as_ref()
            .and_then(|t| t.0.checked_add(valid_for).ok());
        if expires.is_some_and(|e| e > now) {
            return Ok(false);
        }
    }
    if !mine {
        spec.holder_identity = Some(holder.to_owned());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(MicroTime(now));
    match api.replace(LEASE, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(err) if is_status(&err, 409) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Keeps trying to hold the Lease forever, publishing whether this agent is the active one.
pub async fn run(client: Client, holder: String, shared: Arc<Shared>) {
    let active = &shared.active;
    let api: Api<Lease> = Api::namespaced(client, names::FLEDGE_NAMESPACE);
    let mut last_renew: Option<tokio::time::Instant> = None;
    let mut standby_logged = false;
    loop {
        match try_acquire(&api, &holder).await {
            Ok(true) => {
                if !*active.borrow() {
                    tracing::info!(%holder, "holding the agent Lease: this agent is active");
                }
                last_renew = Some(tokio::time::Instant::now());
                standby_logged = false;
                active.send_replace(true);
            }
            Ok(false) => {
                if *active.borrow() || !standby_logged {
                    tracing::info!(%holder, "another agent holds the Lease; standing by");
                    standby_logged = true;
                }
                last_renew = None;
                active.send_replace(false);
            }
            Err(err) => {
                tracing::warn!(error = %err, "renewing the agent Lease failed");
                let expired = last_renew.is_none_or(|at| at.elapsed() >= DURATION - RENEW);
                if expired && *active.borrow() {
                    tracing::warn!("standing by: the Lease could not be renewed in time");
                    active.send_replace(false);
                }
            }
        }
        tokio::time::sleep(RENEW).await;
    }
}

/// Gives the Lease up (on shutdown), so a replacement starts at once.
pub async fn release(client: Client, holder: &str) {
    let api: Api<Lease> = Api::namespaced(client, names::FLEDGE_NAMESPACE);
    let Ok(Some(mut lease)) = api.get_opt(LEASE).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(holder) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    if let Err(err) = api.replace(LEASE, &PostParams::default(), &lease).await {
        tracing::warn!(error = %err, "releasing the agent Lease failed; it expires on its own");
    }
}
