//! `HandedOver` and `Ready`/`Degraded`: after the pivot the phase mirrors the agent, as the
//! AgentService replica records it in `status.agent` (see the design contract):
//! HandedOver once the agent is connected and acknowledged the current spec generation;
//! Ready when it also reports `Ready`; Degraded when it reports `Degraded`.

use fledge_core::names;
use fledge_core::spec::{ClusterProfile, WorkloadCluster};
use kube::{Api, ResourceExt};

use super::{Context, Error, Progress};

/// How often a cluster waiting for its agent is looked at again: the AgentService's status
/// writes (connected, acknowledged, reported phase) wake the controller through its watch, so
/// this is only a safety net, kept long so idle clusters cost next to nothing.
const AGENT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn waiting(step: &'static str, message: impl Into<String>) -> Progress {
    Progress::Waiting {
        step,
        message: message.into(),
        retry_after: AGENT_WAIT,
    }
}

/// The spec generation the agent must have applied.
///
/// # Errors
/// Reading the profile failed.
pub async fn wanted_generation(ctx: &Context, cluster: &WorkloadCluster) -> Result<i64, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let profile_generation = match cluster.spec.profile.as_deref() {
        Some(profile) => {
            let api: Api<ClusterProfile> = Api::namespaced(ctx.client.clone(), &namespace);
            api.get_opt(profile)
                .await
                .map_err(Error::kube(
                    "reading",
                    format!("ClusterProfile {namespace}/{profile}"),
                ))?
                .and_then(|p| p.metadata.generation)
                .unwrap_or(0)
        }
        None => 0,
    };
    Ok(names::spec_generation(
        cluster.metadata.generation.unwrap_or(0),
        profile_generation,
    ))
}

/// `HandedOver`: done when the agent is connected and acknowledged the current generation.
///
/// # Errors
/// Reading the profile failed.
pub async fn handed_over(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    let wanted = wanted_generation(ctx, cluster).await?;
    let agent = cluster.status.as_ref().and_then(|s| s.agent.as_ref());
    let Some(agent) = agent.filter(|a| a.connected) else {
        return Ok(waiting(
            "WaitingForAgent",
            "the pivot is done; waiting for the agent to connect",
        ));
    };
    if agent.applied_generation.unwrap_or(0) < wanted {
        return Ok(waiting(
            "WaitingForAgent",
            format!(
                "the agent is connected; waiting for it to acknowledge spec generation {wanted}"
            ),
        ));
    }
    Ok(Progress::Done)
}

/// `Ready`: done when the agent reports Ready for the current generation; Degraded when it
/// reports Degraded; otherwise the cluster stays HandedOver while the agent works.
///
/// # Errors
/// Reading the profile failed.
pub async fn ready(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    let wanted = wanted_generation(ctx, cluster).await?;
    let agent = cluster
        .status
        .as_ref()
        .and_then(|s| s.agent.clone())
        .unwrap_or_default();
    let message = agent.reported_message.clone().unwrap_or_default();
    match agent.reported_phase.as_deref() {
        Some("Degraded") => Ok(Progress::Degraded(if message.is_empty() {
            "the agent reports Degraded".to_string()
        } else {
            message
        })),
        Some("Ready") if agent.applied_generation.unwrap_or(0) >= wanted => Ok(Progress::Done),
        other => Ok(waiting(
            "AgentProgressing",
            format!(
                "the agent works towards the spec (reports {}){}",
                other.unwrap_or("nothing yet"),
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ),
        )),
    }
}
