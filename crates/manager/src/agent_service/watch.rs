//! One watcher per replica over every WorkloadCluster and ClusterProfile, and the desired
//! state (spec, profile, generation) computed from its caches.
//!
//! Why one watcher and not one per agent: 10,000 streams per replica must not mean 10,000
//! watches on the management cluster. The reflector caches keep every object in memory (a few
//! KiB each); a change wakes only the stream of the affected cluster through the
//! [`Registry`], and the stream reads the newest object from the cache.

use std::sync::Arc;

use fledge_core::names;
use fledge_core::proto::v1::{ProfileSpec, SpecUpdate};
use fledge_core::spec::{ClusterProfile, WorkloadCluster};
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::registry::{ClusterKey, Registry};

/// The replica's caches of WorkloadClusters and ClusterProfiles.
#[derive(Clone)]
pub struct Stores {
    /// Every WorkloadCluster.
    pub clusters: Store<WorkloadCluster>,
    /// Every ClusterProfile.
    pub profiles: Store<ClusterProfile>,
    /// Turns true once both stores hold their first complete list. A watch channel wakes every
    /// waiter, which matters when thousands of agents reconnect at once to a fresh replica
    /// (waiting on the stores themselves woke only some of them).
    pub ready: tokio::sync::watch::Receiver<bool>,
}

impl Stores {
    /// Waits until both stores are ready; false if the watcher is gone.
    pub async fn wait_ready(&self) -> bool {
        let mut ready = self.ready.clone();
        ready.wait_for(|r| *r).await.is_ok()
    }
}

/// What the agent of a cluster should have, computed from the caches.
#[derive(Debug, Clone)]
pub struct Desired {
    /// [`names::spec_generation`] of the cluster and its profile.
    pub generation: i64,
    /// The cluster's uid (a recreated cluster is a different cluster).
    pub uid: String,
    /// The message to send.
    pub update: SpecUpdate,
}

/// Computes the desired state of `cluster` with the profile from `profiles`.
///
/// `None` while the cluster names a profile the cache does not hold (yet): sending the spec
/// without its add-ons would make the agent prune them. The profile's watch event wakes the
/// stream again. (The API refuses unknown profiles and deleting a profile in use, so this is
/// a cache lag, or a cluster written with kubectl that cannot progress anyway.)
pub fn desired(cluster: &WorkloadCluster, profiles: &Store<ClusterProfile>) -> Option<Desired> {
    let namespace = cluster.namespace().unwrap_or_default();
    let profile = match &cluster.spec.profile {
        Some(name) => Some(profiles.get(&ObjectRef::new(name).within(&namespace))?),
        None => None,
    };
    let profile_generation = profile
        .as_ref()
        .and_then(|p| p.metadata.generation)
        .unwrap_or(0);
    let generation =
        names::spec_generation(cluster.metadata.generation.unwrap_or(0), profile_generation);
    Some(Desired {
        generation,
        uid: cluster.uid().unwrap_or_default(),
        update: SpecUpdate {
            generation,
            spec: Some((&cluster.spec).into()),
            profile: profile.map(|p| ProfileSpec::from(&p.spec)),
            deleting: cluster.metadata.deletion_timestamp.is_some(),
        },
    })
}

impl Stores {
    /// The desired state of cluster `key`, if the cache holds it.
    pub fn desired(&self, key: &ClusterKey) -> Option<Desired> {
        let cluster = self.clusters.get(&ObjectRef::new(&key.1).within(&key.0))?;
        desired(&cluster, &self.profiles)
    }
}

/// Starts the caches; the returned future runs the watches (forever, with kube-runtime's
/// backoff on errors) and wakes the streams of changed clusters.
pub fn start(
    client: kube::Client,
    registry: Arc<Registry>,
) -> (Stores, impl Future<Output = ()> + Send + 'static) {
    let (clusters, cluster_writer) = reflector::store::<WorkloadCluster>();
    let (profiles, profile_writer) = reflector::store::<ClusterProfile>();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let stores = Stores {
        clusters: clusters.clone(),
        profiles: profiles.clone(),
        ready,
    };
    let (ready_clusters, ready_profiles) = (clusters.clone(), profiles.clone());
    let ready_task = async move {
        // One waiter per store; every session waits on the channel.
        if ready_clusters.wait_until_ready().await.is_ok()
            && ready_profiles.wait_until_ready().await.is_ok()
        {
            let _ = ready_tx.send(true);
        }
    };
    let cluster_events = reflector::reflector(
        cluster_writer,
        watcher(
            Api::<WorkloadCluster>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let profile_events = reflector::reflector(
        profile_writer,
        watcher(
            Api::<ClusterProfile>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let cluster_registry = registry.clone();
    let clusters_task = async move {
        let mut events = std::pin::pin!(cluster_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(cluster) | watcher::Event::Delete(cluster)) => {
                    let key = (cluster.namespace().unwrap_or_default(), cluster.name_any());
                    cluster_registry.notify(&key);
                }
                // After a (re)list every stream re-checks: changes may have been missed.
                Ok(watcher::Event::InitDone) => cluster_registry.notify_where(|_| true),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(err) => tracing::warn!(%err, "Watching WorkloadClusters for agent streams"),
            }
        }
    };
    let profiles_task = async move {
        let mut events = std::pin::pin!(profile_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(profile) | watcher::Event::Delete(profile)) => {
                    let namespace = profile.namespace().unwrap_or_default();
                    let name = profile.name_any();
                    registry.notify_where(|key| {
                        key.0 == namespace
                            && clusters
                                .get(&ObjectRef::new(&key.1).within(&key.0))
                                .is_some_and(|c| c.spec.profile.as_deref() == Some(name.as_str()))
                    });
                }
                Ok(watcher::Event::InitDone) => registry.notify_where(|_| true),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(err) => tracing::warn!(%err, "Watching ClusterProfiles for agent streams"),
            }
        }
    };
    let run = async move {
        tokio::join!(clusters_task, profiles_task, ready_task);
    };
    (stores, run)
}
