//! WorkloadCluster operations of `ClusterService`: the domain functions behind the handlers.
//!
//! Every function addresses the tenant's namespace only, so another tenant's cluster is
//! simply not there (NOT_FOUND, never PERMISSION_DENIED, to not leak existence).

use fledge_core::proto::v1;
use fledge_core::spec::{ClusterProfile, WorkloadCluster, WorkloadClusterSpec};
use fledge_core::validate::{validate_cluster, validate_update};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, PostParams, Preconditions, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};

use super::auth::Tenant;
use super::status::{ApiError, kube_call};
use super::{Ctx, Page, timestamp};

const KIND: &str = "WorkloadCluster";

/// Phases during which a delete must wait: interrupting a pivot would leave the cluster's
/// CAPI objects half-moved.
const UNINTERRUPTIBLE_PHASES: [&str; 1] = ["Pivoting"];

fn api(ctx: &Ctx, tenant: &Tenant) -> Api<WorkloadCluster> {
    Api::namespaced(ctx.client.clone(), &tenant.0)
}

/// Converts a stored cluster into its API form.
pub fn to_proto(cluster: &WorkloadCluster) -> v1::Cluster {
    let counts = |r: &fledge_core::spec::ReplicaCounts| v1::ReplicaCounts {
        ready: r.ready,
        desired: r.desired,
        version: r.version.clone().unwrap_or_default(),
    };
    let status = cluster.status.as_ref().map(|s| v1::ClusterStatus {
        phase: s.phase.clone().unwrap_or_default(),
        message: s.message.clone().unwrap_or_default(),
        progress_percent: s.progress_percent.unwrap_or_default(),
        observed_generation: s.observed_generation.unwrap_or_default(),
        control_plane: s.control_plane.as_ref().map(counts),
        pools: s
            .pools
            .iter()
            .map(|(name, r)| (name.clone(), counts(r)))
            .collect(),
        addons: s
            .addons
            .iter()
            .map(|a| v1::AddonStatus {
                name: a.name.clone(),
                state: a.state.clone(),
                message: a.message.clone(),
                applied_at: a.applied_at.as_deref().and_then(rfc3339_to_proto),
            })
            .collect(),
        conditions: s
            .conditions
            .iter()
            .map(|c| v1::Condition {
                r#type: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.as_deref().and_then(rfc3339_to_proto),
            })
            .collect(),
        agent: s.agent.as_ref().map(|a| v1::AgentConnection {
            connected: a.connected,
            last_seen: a.last_seen.as_deref().and_then(rfc3339_to_proto),
            agent_version: a.version.clone().unwrap_or_default(),
            applied_generation: a.applied_generation.unwrap_or_default(),
        }),
    });
    v1::Cluster {
        name: cluster.name_any(),
        tenant: cluster.namespace().unwrap_or_default(),
        uid: cluster.uid().unwrap_or_default(),
        generation: cluster.metadata.generation.unwrap_or_default(),
        spec: Some((&cluster.spec).into()),
        status: Some(status.unwrap_or_default()),
        created_at: cluster.metadata.creation_timestamp.as_ref().map(timestamp),
        revision: cluster.resource_version().unwrap_or_default(),
    }
}

/// Parses an RFC 3339 time into a protobuf timestamp (`None` when unparsable).
pub fn rfc3339_to_proto(text: &str) -> Option<prost_types::Timestamp> {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| prost_types::Timestamp {
            seconds: t.as_second(),
            nanos: t.subsec_nanosecond(),
        })
}

/// Validates a cluster and checks that its profile exists in the tenant.
async fn check(ctx: &Ctx, tenant: &Tenant, cluster: &WorkloadCluster) -> Result<(), ApiError> {
    let name = cluster.name_any();
    let mut errors = validate_cluster(cluster).err().unwrap_or_default();
    if let Some(profile) = &cluster.spec.profile {
        let profiles: Api<ClusterProfile> = Api::namespaced(ctx.client.clone(), &tenant.0);
        let found = kube_call(
            ctx.timeout,
            "get",
            "ClusterProfile",
            profile,
            profiles.get_opt(profile),
        )
        .await?;
        if found.is_none() {
            errors.push(fledge_core::validate::FieldError::new(
                "spec.profile",
                format!(
                    "ClusterProfile {profile:?} does not exist in tenant {:?}",
                    tenant.0
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            kind: KIND,
            name,
            errors,
        })
    }
}

fn spec_from(
    kind: &'static str,
    name: &str,
    spec: Option<v1::ClusterSpec>,
) -> Result<WorkloadClusterSpec, ApiError> {
    spec.map(Into::into)
        .ok_or_else(|| ApiError::field(kind, name, "spec", "is required"))
}

/// Creates the tenant's namespace on its first object.
pub async fn ensure_namespace(ctx: &Ctx, tenant: &Tenant) -> Result<(), ApiError> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    if kube_call(
        ctx.timeout,
        "get",
        "Namespace",
        &tenant.0,
        namespaces.get_opt(&tenant.0),
    )
    .await?
    .is_some()
    {
        return Ok(());
    }
    tracing::info!(namespace = %tenant.0, "Creating the tenant namespace");
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(tenant.0.clone());
    match kube_call(
        ctx.timeout,
        "create",
        "Namespace",
        &tenant.0,
        namespaces.create(&PostParams::default(), &namespace),
    )
    .await
    {
        Ok(_) => Ok(()),
        // Another request created it first.
        Err(err) if err.is_conflict() => Ok(()),
        Err(err) => Err(err),
    }
}

/// CreateCluster: idempotent for the same spec, ALREADY_EXISTS for a different one.
pub async fn create(
    ctx: &Ctx,
    tenant: &Tenant,
    request: v1::CreateClusterRequest,
) -> Result<v1::Cluster, ApiError> {
    let name = request.name;
    let mut cluster = WorkloadCluster::new(&name, spec_from(KIND, &name, request.spec)?);
    cluster.metadata.namespace = Some(tenant.0.clone());
    check(ctx, tenant, &cluster).await?;
    let api = api(ctx, tenant);
    if let Some(existing) = kube_call(ctx.timeout, "get", KIND, &name, api.get_opt(&name)).await? {
        return same_or_conflict(existing, &cluster);
    }
    ensure_namespace(ctx, tenant).await?;
    tracing::info!(tenant = %tenant.0, cluster = %name, "Creating WorkloadCluster");
    match kube_call(
        ctx.timeout,
        "create",
        KIND,
        &name,
        api.create(&PostParams::default(), &cluster),
    )
    .await
    {
        Ok(created) => Ok(to_proto(&created)),
        // Lost a race with a concurrent create: decide like above.
        Err(err) if err.is_conflict() => {
            let existing = kube_call(ctx.timeout, "get", KIND, &name, api.get(&name)).await?;
            same_or_conflict(existing, &cluster)
        }
        Err(err) => Err(err),
    }
}

fn same_or_conflict(
    existing: WorkloadCluster,
    wanted: &WorkloadCluster,
) -> Result<v1::Cluster, ApiError> {
    if existing.spec == wanted.spec {
        Ok(to_proto(&existing))
    } else {
        Err(ApiError::AlreadyExists {
            kind: KIND,
            name: wanted.name_any(),
        })
    }
}

/// GetCluster.
pub async fn get(ctx: &Ctx, tenant: &Tenant, name: &str) -> Result<v1::Cluster, ApiError> {
    Ok(to_proto(&get_stored(ctx, tenant, name).await?))
}

async fn get_stored(ctx: &Ctx, tenant: &Tenant, name: &str) -> Result<WorkloadCluster, ApiError> {
    // An empty name would address the whole collection.
    if name.is_empty() {
        return Err(ApiError::field(KIND, name, "name", "is required"));
    }
    kube_call(
        ctx.timeout,
        "get",
        KIND,
        name,
        api(ctx, tenant).get_opt(name),
    )
    .await?
    .ok_or_else(|| ApiError::NotFound {
        kind: KIND,
        name: name.to_string(),
    })
}

/// ListClusters: one page, through the API server's limit/continue.
pub async fn list(
    ctx: &Ctx,
    tenant: &Tenant,
    page: Page,
) -> Result<v1::ListClustersResponse, ApiError> {
    let (items, next_page_token) = page.fetch(ctx, api(ctx, tenant), KIND, &tenant.0).await?;
    Ok(v1::ListClustersResponse {
        clusters: items.iter().map(to_proto).collect(),
        next_page_token,
    })
}

/// UpdateCluster: replaces the spec if the stored generation is the expected one (0 skips
/// the check) and the change passes both the spec and the day-2 rules.
pub async fn update(
    ctx: &Ctx,
    tenant: &Tenant,
    request: v1::UpdateClusterRequest,
) -> Result<v1::Cluster, ApiError> {
    let name = request.name;
    let new_spec = spec_from(KIND, &name, request.spec)?;
    let stored = get_stored(ctx, tenant, &name).await?;
    let generation = stored.metadata.generation.unwrap_or_default();
    super::check_generation(KIND, &name, request.expected_generation, generation)?;
    let mut updated = stored.clone();
    updated.spec = new_spec;
    let update_errors = validate_update(&stored.spec, &updated.spec)
        .err()
        .unwrap_or_default();
    let spec_errors = match check(ctx, tenant, &updated).await {
        Ok(()) => Vec::new(),
        Err(ApiError::Invalid { errors, .. }) => errors,
        Err(other) => return Err(other),
    };
    // Both validators may report the same path; keep one violation per (path, reason).
    let mut errors = update_errors;
    for error in spec_errors {
        if !errors.contains(&error) {
            errors.push(error);
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            kind: KIND,
            name,
            errors,
        });
    }
    if updated.spec == stored.spec {
        return Ok(to_proto(&stored));
    }
    tracing::info!(tenant = %tenant.0, cluster = %name, "Updating WorkloadCluster spec");
    // `replace` carries the stored resourceVersion: a concurrent writer makes it a 409,
    // which the caller sees as ABORTED.
    let replaced = kube_call(
        ctx.timeout,
        "replace",
        KIND,
        &name,
        api(ctx, tenant).replace(&name, &PostParams::default(), &updated),
    )
    .await?;
    Ok(to_proto(&replaced))
}

/// DeleteCluster: starts deletion unless the cluster is in an uninterruptible phase.
pub async fn delete(ctx: &Ctx, tenant: &Tenant, name: &str) -> Result<v1::Cluster, ApiError> {
    let stored = get_stored(ctx, tenant, name).await?;
    let phase = stored
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if UNINTERRUPTIBLE_PHASES.contains(&phase.as_str()) {
        return Err(ApiError::FailedPrecondition {
            kind: KIND,
            name: name.to_string(),
            reason: format!("cannot be deleted while {phase}; retry when the phase has changed"),
        });
    }
    tracing::info!(tenant = %tenant.0, cluster = %name, "Deleting WorkloadCluster");
    // The uid precondition makes sure we delete the object we checked, not a re-created one.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: stored.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let deleted = kube_call(
        ctx.timeout,
        "delete",
        KIND,
        name,
        api(ctx, tenant).delete(name, &params),
    )
    .await?;
    Ok(match deleted.left() {
        // Finalizers keep it until the teardown is done: show it with its deletion mark.
        Some(terminating) => to_proto(&terminating),
        None => to_proto(&stored),
    })
}

/// GetKubeconfig: the management cluster's copy `<name>-fledge-kubeconfig` once the pivot
/// started, else the `<name>-kubeconfig` Secret CAPI writes once the control plane exists.
pub async fn kubeconfig(
    ctx: &Ctx,
    tenant: &Tenant,
    name: &str,
) -> Result<v1::Kubeconfig, ApiError> {
    let stored = get_stored(ctx, tenant, name).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &tenant.0);
    // After the pivot the CAPI Secret lives in the workload cluster; the manager keeps a copy
    // (`<name>-fledge-kubeconfig`). Before the pivot only the original exists.
    let copy_name = format!("{name}-fledge-kubeconfig");
    let copy = kube_call(
        ctx.timeout,
        "get",
        "Secret",
        &copy_name,
        secrets.get_opt(&copy_name),
    )
    .await?;
    let secret_name = if copy.is_some() {
        copy_name
    } else {
        format!("{name}-kubeconfig")
    };
    let not_yet = |reason: String| ApiError::FailedPrecondition {
        kind: KIND,
        name: name.to_string(),
        reason,
    };
    let phase = stored
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".to_string());
    let secret = kube_call(ctx.timeout, "get", "Secret", &secret_name, secrets.get_opt(&secret_name))
        .await?
        .ok_or_else(|| {
            not_yet(format!(
                "the kubeconfig is not available yet (phase {phase}); it exists once the first control-plane node is up"
            ))
        })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get("value"))
        .ok_or_else(|| not_yet(format!("Secret {secret_name} has no key `value`")))?;
    let text = String::from_utf8(value.0.clone())
        .map_err(|_| not_yet(format!("Secret {secret_name} key `value` is not UTF-8")))?;
    Ok(v1::Kubeconfig { kubeconfig: text })
}

/// WatchCluster: the current state (unless resuming), then every change, until deletion
/// or server shutdown.
///
/// # Caveats
/// Events go through a bounded channel to the caller; a slow caller slows the watch, which
/// the API server tolerates until its watch timeout, after which the watch is re-opened.
pub async fn watch(
    ctx: &Ctx,
    tenant: &Tenant,
    request: v1::WatchClusterRequest,
) -> Result<tokio::sync::mpsc::Receiver<Result<v1::ClusterEvent, tonic::Status>>, ApiError> {
    let name = request.name;
    let api = api(ctx, tenant);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut revision = request.since_revision;
    if revision.is_empty() {
        let current = get_stored(ctx, tenant, &name).await?;
        revision = current.resource_version().unwrap_or_default();
        let event = v1::ClusterEvent {
            r#type: v1::cluster_event::Type::Updated.into(),
            cluster: Some(to_proto(&current)),
        };
        // The channel is empty and has room: this cannot fail.
        let _ = tx.try_send(Ok(event));
    } else {
        // Resuming: the object must still be in the caller's tenant.
        get_stored(ctx, tenant, &name).await?;
    }
    let timeout = ctx.timeout;
    let mut stopping = ctx.stopping.clone();
    // The task ends when the caller goes away (send fails or the channel closes), when the
    // cluster is deleted, or on a watch error; it owns nothing but the channel.
    tokio::spawn(async move {
        use futures::StreamExt;
        let params = WatchParams::default().fields(&format!("metadata.name={name}"));
        loop {
            let stream = match tokio::time::timeout(timeout, api.watch(&params, &revision)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    let _ = tx
                        .send(Err(ApiError::Kube {
                            verb: "watch",
                            kind: KIND,
                            name: name.clone(),
                            source: err,
                        }
                        .into()))
                        .await;
                    return;
                }
                Err(_) => {
                    let _ = tx
                        .send(Err(ApiError::Timeout {
                            verb: "watch",
                            kind: KIND,
                            name: name.clone(),
                            after: timeout,
                        }
                        .into()))
                        .await;
                    return;
                }
            };
            let mut stream = std::pin::pin!(stream);
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    () = tx.closed() => return,
                    // Server shutdown: end the stream cleanly; the caller re-watches elsewhere.
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                };
                let event = match next {
                    // The API server ended this watch (its timeout): re-open from `revision`.
                    None => break,
                    Some(Err(err)) => {
                        let _ = tx
                            .send(Err(ApiError::Kube {
                                verb: "watch",
                                kind: KIND,
                                name: name.clone(),
                                source: err,
                            }
                            .into()))
                            .await;
                        return;
                    }
                    Some(Ok(event)) => event,
                };
                let (kind, cluster) = match event {
                    WatchEvent::Added(c) | WatchEvent::Modified(c) => {
                        (v1::cluster_event::Type::Updated, c)
                    }
                    WatchEvent::Deleted(c) => (v1::cluster_event::Type::Deleted, c),
                    WatchEvent::Bookmark(b) => {
                        revision = b.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Error(status) => {
                        let status = if status.code == 410 {
                            tonic::Status::aborted(format!(
                                "watch of {name:?}: revision {revision} is too old; watch again without since_revision"
                            ))
                        } else {
                            tonic::Status::unavailable(format!(
                                "watch of {name:?}: {}",
                                status.message
                            ))
                        };
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                revision = cluster.resource_version().unwrap_or_default();
                let deleted = kind == v1::cluster_event::Type::Deleted;
                let event = v1::ClusterEvent {
                    r#type: kind.into(),
                    cluster: Some(to_proto(&cluster)),
                };
                if tx.send(Ok(event)).await.is_err() || deleted {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
