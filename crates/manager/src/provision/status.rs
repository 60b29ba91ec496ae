//! Pure functions from where the pipeline stopped to the `WorkloadCluster`'s status, in
//! Cluster API's manner: one setter per condition, every branch sets status, reason and message.

use fledge_core::names;
use fledge_core::spec::{Condition, WorkloadCluster, WorkloadClusterStatus};

use super::{INVALID_PHASE, Outcome, Phase, Progress};

/// The status `cluster` should have given `outcome`. Fields the pipeline does not own
/// (machine counts) are kept; condition transition times change only with their status.
pub fn desired(cluster: &WorkloadCluster, outcome: &Outcome) -> WorkloadClusterStatus {
    let mut status = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    status.observed_generation = generation;
    match outcome {
        Outcome::Invalid(errors) => {
            let listed = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            status.phase = Some(INVALID_PHASE.to_string());
            status.message = Some(format!("the spec is invalid: {listed}"));
            status.step = None;
            status.progress_percent = Some(0);
            set_condition(
                &mut status,
                generation,
                names::SPEC_VALID_CONDITION,
                "False",
                names::INVALID_SPEC_REASON,
                &listed,
            );
            set_condition(
                &mut status,
                generation,
                names::PROVISIONING_CONDITION,
                "False",
                names::INVALID_SPEC_REASON,
                "nothing is provisioned while the spec is invalid",
            );
        }
        Outcome::Waiting(phase, progress) => {
            let (step, message) = match progress {
                Progress::Waiting { step, message, .. } => (*step, message.clone()),
                Progress::Done | Progress::Invalid(_) | Progress::Degraded(_) => {
                    (names::WAITING_REASON, String::new())
                }
            };
            set_phase(&mut status, *phase, step, &message);
            set_spec_valid(&mut status, generation);
            set_condition(
                &mut status,
                generation,
                names::PROVISIONING_CONDITION,
                "False",
                step,
                &message,
            );
        }
        Outcome::Failed(phase, err) => {
            let message = err.to_string();
            set_phase(&mut status, *phase, names::PHASE_FAILED_REASON, &message);
            set_spec_valid(&mut status, generation);
            set_condition(
                &mut status,
                generation,
                names::PROVISIONING_CONDITION,
                "False",
                names::PHASE_FAILED_REASON,
                &message,
            );
        }
        Outcome::Done => {
            let message = "the agent reports the desired state for the current spec";
            set_phase(
                &mut status,
                Phase::Ready,
                names::AS_EXPECTED_REASON,
                message,
            );
            set_spec_valid(&mut status, generation);
            set_condition(
                &mut status,
                generation,
                names::PROVISIONING_CONDITION,
                "True",
                names::AS_EXPECTED_REASON,
                message,
            );
        }
    }
    set_pivoted(&mut status, generation);
    status
}

/// The `Pivoted` condition follows the phase: True from `HandedOver` on.
fn set_pivoted(status: &mut WorkloadClusterStatus, generation: Option<i64>) {
    let after = [Phase::HandedOver, Phase::Ready, Phase::Degraded];
    let pivoted = status
        .phase
        .as_deref()
        .is_some_and(|p| after.iter().any(|a| a.name() == p));
    if pivoted {
        set_condition(
            status,
            generation,
            names::PIVOTED_CONDITION,
            "True",
            names::AS_EXPECTED_REASON,
            "the Cluster API objects live in the workload cluster",
        );
    } else if status.phase.as_deref() == Some(Phase::Pivoting.name()) {
        let step = status.step.clone().unwrap_or_default();
        let message = status.message.clone().unwrap_or_default();
        set_condition(
            status,
            generation,
            names::PIVOTED_CONDITION,
            "False",
            &step,
            &message,
        );
    }
}

/// The status of a cluster being deleted: phase `Deleting`, with the step it waits for.
pub fn deleting(cluster: &WorkloadCluster, step: &str, message: &str) -> WorkloadClusterStatus {
    let mut status = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    status.observed_generation = generation;
    set_phase(&mut status, Phase::Deleting, step, message);
    set_condition(
        &mut status,
        generation,
        names::DELETING_CONDITION,
        "True",
        step,
        message,
    );
    status
}

fn set_phase(status: &mut WorkloadClusterStatus, phase: Phase, step: &str, message: &str) {
    status.phase = Some(phase.name().to_string());
    status.step = Some(step.to_string());
    status.message = Some(if message.is_empty() {
        phase.name().to_string()
    } else {
        message.to_string()
    });
    status.progress_percent = Some(phase.progress_percent());
}

fn set_spec_valid(status: &mut WorkloadClusterStatus, generation: Option<i64>) {
    set_condition(
        status,
        generation,
        names::SPEC_VALID_CONDITION,
        "True",
        names::AS_EXPECTED_REASON,
        "",
    );
}

/// Sets a condition, keeping its `lastTransitionTime` when the status did not change.
pub fn set_condition(
    status: &mut WorkloadClusterStatus,
    generation: Option<i64>,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
) {
    let existing = status.conditions.iter().position(|c| c.type_ == type_);
    let transition = existing
        .map(|i| &status.conditions[i])
        .filter(|c| c.status == value)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let condition = Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: Some(transition),
        observed_generation: generation,
    };
    match existing {
        Some(i) => status.conditions[i] = condition,
        None => status.conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_core::validate::FieldError;

    fn cluster() -> WorkloadCluster {
        let yaml = include_str!("../../../../examples/single-node.yaml");
        let docs = fledge_core::validate::load_and_validate(yaml).expect("example is valid");
        match docs.into_iter().next() {
            Some(fledge_core::validate::Document::WorkloadCluster(mut c)) => {
                c.metadata.generation = Some(3);
                c
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn condition<'a>(status: &'a WorkloadClusterStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
    }

    #[test]
    fn each_outcome_sets_phase_step_progress_and_conditions() {
        let cases = [
            (
                "invalid",
                Outcome::Invalid(vec![FieldError::new(
                    "spec.controlPlane.replicas",
                    "must be odd",
                )]),
                "Invalid",
                "False",
                "spec.controlPlane.replicas: must be odd",
            ),
            (
                "waiting",
                Outcome::Waiting(
                    Phase::Bootstrapping,
                    Progress::waiting("CredentialsSecretMissing", "no secret"),
                ),
                "Bootstrapping",
                "True",
                "",
            ),
            ("done", Outcome::Done, "Ready", "True", ""),
        ];
        for (name, outcome, phase, spec_valid, spec_message) in cases {
            let status = desired(&cluster(), &outcome);
            assert_eq!(status.phase.as_deref(), Some(phase), "{name}");
            assert_eq!(status.observed_generation, Some(3), "{name}");
            let valid = condition(&status, names::SPEC_VALID_CONDITION);
            assert_eq!(valid.status, spec_valid, "{name}");
            assert_eq!(valid.message, spec_message, "{name}");
            assert!(status.progress_percent.is_some(), "{name}");
        }
        let waiting = desired(
            &cluster(),
            &Outcome::Waiting(
                Phase::Bootstrapping,
                Progress::waiting("CredentialsSecretMissing", "no secret"),
            ),
        );
        assert_eq!(waiting.step.as_deref(), Some("CredentialsSecretMissing"));
        assert_eq!(
            condition(&waiting, names::PROVISIONING_CONDITION).reason,
            "CredentialsSecretMissing"
        );
    }

    #[test]
    fn unchanged_outcome_gives_an_identical_status() {
        let mut c = cluster();
        let outcome = Outcome::Waiting(
            Phase::WaitingForControlPlane,
            Progress::waiting("WaitingForKubeconfig", "x"),
        );
        c.status = Some(desired(&c, &outcome));
        // Equal statuses are not written, so a steady state causes no writes.
        assert_eq!(c.status, Some(desired(&c, &outcome)));
    }
}
