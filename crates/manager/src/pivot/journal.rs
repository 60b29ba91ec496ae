//! The move's journal: ConfigMap `fledge-pivot-<cluster>` in the cluster's namespace of the
//! MANAGEMENT cluster, which survives both sides of the move. It holds the plan (every object
//! in creation order, with its source uid and, once created, its target uid) and the outcome
//! of each step. Every write carries the resourceVersion it was computed from, so two writers
//! (a stale replica and the leader) cannot both advance the same move.

use std::collections::BTreeMap;

use fledge_core::names;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use super::PivotError;

/// Key of the ConfigMap holding the JSON record.
pub const RECORD_KEY: &str = "journal.json";
/// Key holding the state alone (for people and tests: `kubectl get cm -o jsonpath`).
pub const STATE_KEY: &str = "state";
/// Key holding the direction alone.
pub const DIRECTION_KEY: &str = "direction";
/// Label marking journals.
pub const JOURNAL_LABEL: &str = "fledge.dev/pivot-journal";

/// Name of the journal of `cluster`.
pub fn journal_name(cluster: &str) -> String {
    format!("fledge-pivot-{cluster}")
}

/// Which way the objects move.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Management cluster → workload cluster (the pivot).
    Forward,
    /// Workload cluster → management cluster (deletion).
    Reverse,
}

impl Direction {
    /// The value stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
        }
    }
}

/// Where the move stands. Ordered: a move only goes forward through this list, except that
/// any state before [`State::DeletingSource`] may turn into [`State::RollingBack`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// The plan is written; nothing changed yet.
    Planned,
    /// The source is paused.
    Paused,
    /// Every object exists in the target (paused), owner references remapped.
    Created,
    /// Statuses are copied.
    StatusCopied,
    /// Deleting in the source has started: from here on, only forward.
    DeletingSource,
    /// Nothing of the cluster is left in the source.
    SourceDeleted,
    /// The target is unpaused: the move is complete.
    Done,
    /// The move is being undone (the target was unreachable for too long).
    RollingBack,
    /// The move was undone; the source is unpaused.
    RolledBack,
}

impl State {
    /// The value stored in the journal's `state` key.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Planned => "Planned",
            State::Paused => "Paused",
            State::Created => "Created",
            State::StatusCopied => "StatusCopied",
            State::DeletingSource => "DeletingSource",
            State::SourceDeleted => "SourceDeleted",
            State::Done => "Done",
            State::RollingBack => "RollingBack",
            State::RolledBack => "RolledBack",
        }
    }

    /// Whether the move ended (completed or undone).
    pub fn is_final(self) -> bool {
        matches!(self, State::Done | State::RolledBack)
    }
}

/// One object of the plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// `group/version` (or `v1`).
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Resource plural, from the CRD (or the built-in table).
    pub plural: String,
    /// Name (kept in the target).
    pub name: String,
    /// uid in the source.
    pub source_uid: String,
    /// uid in the target, once created (or adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_uid: Option<String>,
    /// Shared with other clusters (the vSphere credentials): copied, never deleted from the
    /// source.
    #[serde(default)]
    pub shared: bool,
    /// Already carried the paused annotation before the move (left as it was).
    #[serde(default)]
    pub had_pause: bool,
    /// The kind has a status subresource (its status is copied after creation).
    #[serde(default)]
    pub status: bool,
    /// Some owner references were left out at creation (owner not created yet: a cycle);
    /// they are added once every object exists.
    #[serde(default)]
    pub refs_pending: bool,
    /// Existed in the target before the move and was not created by it (never deleted by a
    /// rollback).
    #[serde(default)]
    pub pre_existing: bool,
}

impl Entry {
    /// `Kind/name`, as steps name objects.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// The journal's content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Which way.
    pub direction: Direction,
    /// Where the move stands.
    pub state: State,
    /// The plan, owners first.
    pub objects: Vec<Entry>,
    /// Each step's outcome, in order (`paused`, `created:Kind/name`, `status-copied`, ...).
    pub steps: Vec<String>,
    /// When the plan was written (RFC 3339).
    pub started_at: String,
    /// When the move finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The Cluster had `spec.paused: true` before the move (left paused at the end).
    #[serde(default)]
    pub cluster_was_paused: bool,
    /// First failure to reach the target since the last success (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_unreachable_since: Option<String>,
    /// Why the move rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// After a rollback, objects could not be removed from the unreachable target (they are
    /// paused; the next attempt adopts them).
    #[serde(default)]
    pub target_leftovers: bool,
}

impl Record {
    /// Appends a step outcome.
    pub fn step(&mut self, step: impl Into<String>) {
        self.steps.push(step.into());
    }
}

/// A record as stored, with the resourceVersion it was read or written at.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The content.
    pub record: Record,
    /// resourceVersion of the ConfigMap.
    pub resource_version: String,
}

/// Handle on the journal of one cluster, in one direction.
#[derive(Clone)]
pub struct Journal {
    api: Api<ConfigMap>,
    cluster: String,
    direction: Direction,
}

impl Journal {
    /// The journal of `namespace/cluster` in the management cluster, for a move in `direction`.
    pub fn new(management: &Client, namespace: &str, cluster: &str, direction: Direction) -> Self {
        Journal {
            api: Api::namespaced(management.clone(), namespace),
            cluster: cluster.to_string(),
            direction,
        }
    }

    /// The direction of the moves this handle makes.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    fn name(&self) -> String {
        journal_name(&self.cluster)
    }

    /// Reads the record; `None` when there is no journal.
    ///
    /// # Errors
    /// The read failed or the content does not parse.
    pub async fn load(&self) -> Result<Option<Stored>, PivotError> {
        let name = self.name();
        let Some(cm) = self
            .api
            .get_opt(&name)
            .await
            .map_err(PivotError::journal("reading"))?
        else {
            return Ok(None);
        };
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(RECORD_KEY))
            .cloned()
            .unwrap_or_default();
        let record: Record = serde_json::from_str(&text)
            .map_err(|e| PivotError::Internal(format!("journal {name} does not parse: {e}")))?;
        Ok(Some(Stored {
            record,
            resource_version: cm.metadata.resource_version.unwrap_or_default(),
        }))
    }

    fn config_map(
        &self,
        record: &Record,
        resource_version: Option<String>,
    ) -> Result<ConfigMap, PivotError> {
        let text = serde_json::to_string_pretty(record)
            .map_err(|e| PivotError::Internal(format!("serializing the journal: {e}")))?;
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name()),
                resource_version,
                // Never the cluster-name label: the journal must not be part of any move.
                labels: Some(BTreeMap::from([
                    (
                        names::FLEDGE_CLUSTER_LABEL.to_string(),
                        self.cluster.clone(),
                    ),
                    (JOURNAL_LABEL.to_string(), "true".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (RECORD_KEY.to_string(), text),
                (STATE_KEY.to_string(), record.state.as_str().to_string()),
                (
                    DIRECTION_KEY.to_string(),
                    record.direction.as_str().to_string(),
                ),
            ])),
            ..ConfigMap::default()
        })
    }

    /// Writes a new journal; fails with a conflict if one appeared meanwhile.
    ///
    /// # Errors
    /// The write failed (409: another writer created it first).
    pub async fn create(&self, record: Record) -> Result<Stored, PivotError> {
        let cm = self.config_map(&record, None)?;
        let created = self
            .api
            .create(&PostParams::default(), &cm)
            .await
            .map_err(PivotError::journal("creating"))?;
        Ok(Stored {
            record,
            resource_version: created.metadata.resource_version.unwrap_or_default(),
        })
    }

    /// Replaces the record if the journal is still at `stored.resource_version`, then updates
    /// `stored` to the new version.
    ///
    /// # Errors
    /// The write failed (409: the journal changed since it was read).
    pub async fn save(&self, stored: &mut Stored) -> Result<(), PivotError> {
        let cm = self.config_map(&stored.record, Some(stored.resource_version.clone()))?;
        let written = self
            .api
            .replace(&self.name(), &PostParams::default(), &cm)
            .await
            .map_err(PivotError::journal("writing"))?;
        stored.resource_version = written.metadata.resource_version.unwrap_or_default();
        Ok(())
    }

    /// Replaces an old record (another direction, or a finished move) with a new one.
    ///
    /// # Errors
    /// The write failed (409: the journal changed since it was read).
    pub async fn replace(&self, old: &Stored, record: Record) -> Result<Stored, PivotError> {
        let mut stored = Stored {
            record,
            resource_version: old.resource_version.clone(),
        };
        self.save(&mut stored).await?;
        Ok(stored)
    }

    /// Deletes the journal if it exists.
    ///
    /// # Errors
    /// The delete failed.
    pub async fn delete(&self) -> Result<(), PivotError> {
        match self
            .api
            .delete(&self.name(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(PivotError::journal("deleting")(e)),
        }
    }
}
