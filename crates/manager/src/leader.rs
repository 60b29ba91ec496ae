//! Leader election over a `coordination.k8s.io/v1` Lease, so that exactly one replica runs the
//! provisioning controller while every replica serves gRPC.
//!
//! The shape is client-go's `leaderelection`: each process has an identity; the holder renews
//! `spec.renewTime` every [`LeaderConfig::renew_every`]; another process takes the Lease over
//! only once `renewTime + leaseDurationSeconds` has passed. Every write carries the
//! `resourceVersion` it was computed from, so two candidates racing for an expired Lease
//! cannot both win: the API server accepts one replace and answers 409 to the other.
//!
//! # Caveats
//! - Like client-go, this trusts clocks to be roughly in sync: a holder that cannot renew
//!   steps down (reports "not leader") after `lease_duration` without a successful renew,
//!   before anyone else may take over, as long as clocks drift less than the renew margin.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Settings of one candidate.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity, unique among the replicas.
    pub identity: String,
    /// How long a Lease stays valid after its last renew.
    pub lease_duration: Duration,
    /// How often the holder renews (and a candidate retries).
    pub renew_every: Duration,
}

impl LeaderConfig {
    /// The manager's Lease `namespace/name` with client-go's usual timings scaled down
    /// (15 s lease, renew every 2 s) and a fresh identity for this process.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: process_identity(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// An identity unique per process: the host name (the Pod name in a Deployment), the pid and
/// the start time, so a restarted process never inherits its predecessor's Lease silently.
pub fn process_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "fledge-manager".to_string());
    let nanos = Timestamp::now().as_nanosecond();
    format!("{host}-{}-{:x}", std::process::id(), nanos % 0xffff_ffff)
}

/// Runs the election until `shutdown` completes, publishing `true` on `leading` while this
/// process holds the Lease. On shutdown a held Lease is released (holder cleared), so the next
/// replica takes over at once instead of after the lease duration.
pub async fn run(
    client: Client,
    config: LeaderConfig,
    leading: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_renew: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        match try_acquire_or_renew(&api, &config).await {
            Ok(true) => {
                if !*leading.borrow() {
                    tracing::info!(identity = %config.identity, lease = %config.name, "Acquired leadership");
                }
                last_renew = Some(tokio::time::Instant::now());
                leading.send_replace(true);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(identity = %config.identity, "Lost leadership to another replica");
                }
                last_renew = None;
                leading.send_replace(false);
            }
            Err(err) => {
                tracing::warn!(%err, lease = %config.name, "Renewing the Lease failed");
                // Keep leading only while the last successful renew is still valid.
                let expired = last_renew.is_none_or(|at| {
                    at.elapsed() >= config.lease_duration.saturating_sub(config.renew_every)
                });
                if expired && *leading.borrow() {
                    tracing::warn!("Stepping down: the Lease could not be renewed in time");
                    leading.send_replace(false);
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(config.renew_every) => {}
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        if let Err(err) = release(&api, &config).await {
            tracing::warn!(%err, "Releasing the Lease failed; another replica takes over when it expires");
        }
    }
}

/// One round: create, renew or take over the Lease. `Ok(true)` means this process holds it.
///
/// # Errors
/// Reading or writing the Lease failed for another reason than losing a race.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaderConfig,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration_secs = i32::try_from(config.lease_duration.as_secs()).unwrap_or(15);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
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
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == config.identity;
    if !mine && !holder.is_empty() {
        let valid_for = SignedDuration::from_secs(i64::from(
            spec.lease_duration_seconds.unwrap_or(duration_secs),
        ));
        let expires = spec
            .renew_time
            .as_ref()
            .map(|t| t.0)
            .and_then(|t| t.checked_add(valid_for).ok());
        if expires.is_some_and(|expires| expires > now) {
            return Ok(false);
        }
    }
    if !mine {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(MicroTime(now));
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if is_status(&err, 409) => Ok(false),
        Err(err) => Err(err),
    }
}

async fn release(api: &Api<Lease>, config: &LeaderConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    api.replace(&config.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

/// Whether `err` is an API error with HTTP status `code`.
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}
