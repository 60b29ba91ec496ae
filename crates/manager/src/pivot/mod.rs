//! The mover: `clusterctl move` semantics for one cluster, made crash-safe. Direction-agnostic:
//! the pivot moves a cluster's Cluster API objects from the management cluster into the
//! workload cluster, deletion moves them back (reverse pivot).
//!
//! # Steps (each recorded in the [`journal`] before the next starts)
//! 1. Preconditions: the target has the source's providers (clusterctl `Provider` inventory),
//!    the control plane is initialized, no Machine is being provisioned or deleted, every
//!    object a graph object refers to is in the graph. Then the plan ([`graph`]) is written.
//! 2. Pause the source: the Cluster's `spec.paused: true` (v1beta2), and the
//!    `cluster.x-k8s.io/paused` annotation on the other Cluster API objects.
//! 3. Create in the target, owners first, with ownerReferences remapped to the new uids
//!    (create-if-absent, update-if-present; a created object carries the source uid in an
//!    annotation, so one created just before a crash is recognised). Copies are paused,
//!    because their source was. References left out by a cycle are added afterwards.
//! 4. Copy each `status` through the status subresource.
//! 5. Delete in the source, dependents first, each after removing its finalizers, with uid and
//!    resourceVersion preconditions (a controller re-adding a finalizer makes the delete fail
//!    and retry, so no controller ever sees a deletion of a moved object). Shared objects (the
//!    vSphere credentials) stay.
//! 6. Unpause the target.
//!
//! # Failure
//! While the target cannot be reached, each attempt fails and the journal remembers since
//! when; past the timeout, and only before step 5 started, the move rolls back: the source is
//! unpaused (the target's copies are paused: never two active copies), then the copies are
//! deleted from the target, or left paused there if it is still unreachable (the next attempt
//! adopts them). From step 5 on, the move only goes forward: the source is partly gone.
//!
//! # Kill points
//! A kill point ([`kill`]) sits at every step boundary; the end-to-end tests crash the
//! manager at each one and check that the restarted manager converges.

pub mod graph;
pub mod journal;
pub mod kill;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fledge_core::names;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::{Api, Client};
use serde_json::{Value, json};

pub use journal::{Direction, Journal, State};
use journal::{Entry, Record, Stored};
use kill::kill_point;

/// Annotation on each object the mover creates: the uid of its source object.
pub const SOURCE_UID_ANNOTATION: &str = "fledge.dev/pivot-source-uid";
/// Field manager of the mover's writes.
pub const PIVOT_FIELD_MANAGER: &str = "fledge-pivot";
/// Default of how long the target may be unreachable before a move rolls back.
pub const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(300);
/// Environment variable overriding [`DEFAULT_TARGET_TIMEOUT`] (seconds; tests use a few).
pub const TARGET_TIMEOUT_ENV: &str = "FLEDGE_PIVOT_TARGET_TIMEOUT_SECONDS";

/// Which side of the move a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Where the objects come from.
    Source,
    /// Where they go.
    Target,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// Errors of a move. A move that fails can be called again: it resumes from its journal.
#[derive(Debug, thiserror::Error)]
pub enum PivotError {
    /// A precondition does not hold yet (the caller waits and retries).
    #[error("precondition: {0}")]
    Precondition(String),
    /// A call to one side failed.
    #[error("{side} cluster: {verb} {what}: {source}")]
    Kube {
        /// Which side.
        side: Side,
        /// What was done.
        verb: &'static str,
        /// The object or collection.
        what: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// A call to the journal failed (409: another writer moved it on).
    #[error("journal: {verb}: {source}")]
    Journal {
        /// What was done.
        verb: &'static str,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// The target has been unreachable since `since`; the move rolls back after the timeout.
    #[error("target unreachable since {since} (rollback after {timeout_secs}s): {source}")]
    TargetUnreachable {
        /// RFC 3339.
        since: String,
        /// The rollback timeout.
        timeout_secs: u64,
        /// The last failure.
        #[source]
        source: Box<PivotError>,
    },
    /// A move in the other direction is still in progress.
    #[error("a {0} move of this cluster is in progress")]
    OtherDirection(&'static str),
    /// An impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PivotError {
    fn kube(
        side: Side,
        verb: &'static str,
        what: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| PivotError::Kube {
            side,
            verb,
            what,
            source,
        }
    }

    fn journal(verb: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| PivotError::Journal { verb, source }
    }

    /// Whether this is the target failing to answer (not an API refusal).
    pub fn is_target_unreachable(&self) -> bool {
        match self {
            PivotError::Kube {
                side: Side::Target,
                source,
                ..
            } => match source {
                kube::Error::Api(status) => status.code >= 500,
                _ => true,
            },
            PivotError::TargetUnreachable { .. } => true,
            _ => false,
        }
    }
}

/// Settings of a move.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// How long the target may be unreachable before the move rolls back.
    pub target_timeout: Duration,
}

impl MoveOptions {
    /// The defaults, with [`TARGET_TIMEOUT_ENV`] applied.
    pub fn from_env() -> Self {
        let target_timeout = std::env::var(TARGET_TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_TARGET_TIMEOUT, Duration::from_secs);
        MoveOptions { target_timeout }
    }
}

/// How a move ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The objects live in the target, unpaused.
    Moved,
    /// The move was undone; the source is unpaused.
    RolledBack {
        /// Why.
        reason: String,
    },
}

/// What a finished move did.
#[derive(Debug, Clone)]
pub struct MoveReport {
    /// How it ended.
    pub outcome: MoveOutcome,
    /// Objects in the plan.
    pub objects: usize,
    /// From the plan to the end (across restarts, from the journal's timestamps).
    pub duration: Duration,
    /// Whether this call did the work (false: the journal already said it was finished).
    pub performed: bool,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn elapsed_since(rfc3339: &str) -> Duration {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}

fn report(stored: &Stored, performed: bool) -> MoveReport {
    let record = &stored.record;
    let duration = match (
        &record.finished_at,
        chrono::DateTime::parse_from_rfc3339(&record.started_at),
    ) {
        (Some(end), Ok(start)) => chrono::DateTime::parse_from_rfc3339(end)
            .ok()
            .and_then(|e| (e - start).to_std().ok())
            .unwrap_or_default(),
        _ => elapsed_since(&record.started_at),
    };
    MoveReport {
        outcome: match record.state {
            State::RolledBack | State::RollingBack => MoveOutcome::RolledBack {
                reason: record.reason.clone().unwrap_or_default(),
            },
            _ => MoveOutcome::Moved,
        },
        objects: record.objects.len(),
        duration,
        performed,
    }
}

/// Moves the Cluster API objects of `namespace/cluster` from `source` to `target`, resuming
/// from `journal` if a move in the same direction was interrupted. Returns at once with the
/// recorded outcome when the journal says the move already finished.
///
/// # Errors
/// A precondition does not hold, a call failed, or the target is unreachable (within the
/// rollback timeout). Calling again resumes.
pub async fn move_cluster(
    source: &Client,
    target: &Client,
    namespace: &str,
    cluster: &str,
    journal: &Journal,
    options: &MoveOptions,
) -> Result<MoveReport, PivotError> {
    let started = Instant::now();
    let mut stored = match journal.load().await? {
        Some(s) if s.record.direction == journal.direction() => s,
        Some(s) if !s.record.state.is_final() => {
            return Err(PivotError::OtherDirection(s.record.direction.as_str()));
        }
        old => {
            let record = plan(source, target, namespace, cluster, journal.direction()).await?;
            tracing::info!(
                direction = journal.direction().as_str(),
                objects = record.objects.len(),
                "Move planned"
            );
            let stored = match old {
                Some(old) => journal.replace(&old, record).await?,
                None => journal.create(record).await?,
            };
            kill_point!("pivot-after-plan", cluster);
            stored
        }
    };
    if stored.record.state.is_final() {
        // Finished before this call: a later reconcile asking again.
        return Ok(report(&stored, false));
    }
    let mover = Mover {
        source,
        target,
        namespace,
        cluster,
        journal,
    };
    loop {
        let state = stored.record.state;
        let result = match state {
            State::Planned => mover.pause_source(&mut stored).await,
            State::Paused => mover.create_all(&mut stored).await,
            State::Created => mover.copy_status(&mut stored).await,
            State::StatusCopied => {
                stored.record.state = State::DeletingSource;
                journal.save(&mut stored).await?;
                kill_point!("pivot-before-delete", cluster);
                Ok(())
            }
            State::DeletingSource => mover.delete_source(&mut stored).await,
            State::SourceDeleted => mover.unpause_target(&mut stored).await,
            State::RollingBack => mover.roll_back(&mut stored).await,
            State::Done | State::RolledBack => {
                let report = report(&stored, true);
                tracing::info!(
                    direction = journal.direction().as_str(),
                    objects = report.objects,
                    duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                    call_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    outcome = ?report.outcome,
                    "Move finished"
                );
                return Ok(report);
            }
        };
        match result {
            Ok(()) => {
                if stored.record.target_unreachable_since.is_some() {
                    stored.record.target_unreachable_since = None;
                    journal.save(&mut stored).await?;
                }
            }
            Err(err) if err.is_target_unreachable() && state < State::DeletingSource => {
                let since = match stored.record.target_unreachable_since.clone() {
                    Some(since) => since,
                    None => {
                        let since = now();
                        stored.record.target_unreachable_since = Some(since.clone());
                        journal.save(&mut stored).await?;
                        since
                    }
                };
                if elapsed_since(&since) >= options.target_timeout {
                    let reason = format!(
                        "the target cluster was unreachable for more than {}s during the {} move: {err}",
                        options.target_timeout.as_secs(),
                        journal.direction().as_str()
                    );
                    tracing::warn!(%reason, "Rolling the move back");
                    stored.record.state = State::RollingBack;
                    stored.record.reason = Some(reason);
                    stored.record.step("rolling-back");
                    journal.save(&mut stored).await?;
                    continue;
                }
                return Err(PivotError::TargetUnreachable {
                    since,
                    timeout_secs: options.target_timeout.as_secs(),
                    source: Box::new(err),
                });
            }
            Err(err) => return Err(err),
        }
    }
}

/// Checks the preconditions and builds the plan.
async fn plan(
    source: &Client,
    target: &Client,
    namespace: &str,
    cluster: &str,
    direction: Direction,
) -> Result<Record, PivotError> {
    check_providers(source, target).await?;
    let nodes = graph::discover(source, namespace, cluster).await?;
    check_graph(&nodes, cluster)?;
    let cluster_was_paused = nodes
        .iter()
        .any(|(e, o)| e.kind == "Cluster" && e.name == cluster && o["spec"]["paused"] == true);
    let mut record = Record {
        direction,
        state: State::Planned,
        objects: nodes.into_iter().map(|(e, _)| e).collect(),
        steps: Vec::new(),
        started_at: now(),
        finished_at: None,
        cluster_was_paused,
        target_unreachable_since: None,
        reason: None,
        target_leftovers: false,
    };
    record.step("planned");
    Ok(record)
}

fn inventory_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "clusterctl.cluster.x-k8s.io",
        "v1alpha3",
        "Provider",
    ))
}

/// Every provider of the source's clusterctl inventory is in the target's, same type and
/// version.
async fn check_providers(source: &Client, target: &Client) -> Result<(), PivotError> {
    let key = |o: &DynamicObject| {
        (
            o.data["providerName"]
                .as_str()
                .map(str::to_string)
                .or_else(|| o.metadata.name.clone())
                .unwrap_or_default(),
            o.data["type"].as_str().unwrap_or_default().to_string(),
            o.data["version"].as_str().unwrap_or_default().to_string(),
        )
    };
    let list = |client: &Client| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &inventory_resource());
        async move { api.list(&ListParams::default()).await }
    };
    let source_inventory: BTreeSet<_> = match list(source).await {
        Ok(l) => l.items.iter().map(key).collect(),
        Err(kube::Error::Api(s)) if s.code == 404 => BTreeSet::new(),
        Err(e) => {
            return Err(PivotError::kube(
                Side::Source,
                "listing",
                "the provider inventory",
            )(e));
        }
    };
    if source_inventory.is_empty() {
        return Err(PivotError::Precondition(
            "the source has no clusterctl provider inventory".to_string(),
        ));
    }
    let target_inventory: BTreeSet<_> = match list(target).await {
        Ok(l) => l.items.iter().map(key).collect(),
        Err(kube::Error::Api(s)) if s.code == 404 => BTreeSet::new(),
        Err(e) => {
            return Err(PivotError::kube(
                Side::Target,
                "listing",
                "the provider inventory",
            )(e));
        }
    };
    let missing: Vec<String> = source_inventory
        .difference(&target_inventory)
        .map(|(n, t, v)| format!("{n} ({t} {v})"))
        .collect();
    if !missing.is_empty() {
        return Err(PivotError::Precondition(format!(
            "the target lacks providers: {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// The control plane is initialized, no Machine is being provisioned or deleted, no object is
/// being deleted, and every reference of the Cluster and the Machines is in the graph.
fn check_graph(nodes: &[(Entry, Value)], cluster: &str) -> Result<(), PivotError> {
    let present: BTreeSet<(String, String)> = nodes
        .iter()
        .map(|(e, _)| (e.kind.clone(), e.name.clone()))
        .collect();
    let mut problems = Vec::new();
    let mut require = |kind: &str, r: &Value, what: &str| {
        if let Some(name) = r["name"].as_str()
            && !present.contains(&(kind.to_string(), name.to_string()))
        {
            problems.push(format!("{what} {kind}/{name} not found"));
        }
    };
    for (e, o) in nodes {
        if !o["metadata"]["deletionTimestamp"].is_null() && !e.shared {
            return Err(PivotError::Precondition(format!(
                "{} is being deleted",
                e.id()
            )));
        }
        match e.kind.as_str() {
            "Cluster" if e.name == cluster => {
                if o["status"]["initialization"]["controlPlaneInitialized"] != true {
                    return Err(PivotError::Precondition(format!(
                        "Cluster {cluster}: the control plane is not initialized"
                    )));
                }
                let infra = &o["spec"]["infrastructureRef"];
                require(
                    infra["kind"].as_str().unwrap_or("VSphereCluster"),
                    infra,
                    "infrastructureRef",
                );
                let cp = &o["spec"]["controlPlaneRef"];
                require(
                    cp["kind"].as_str().unwrap_or("KubeadmControlPlane"),
                    cp,
                    "controlPlaneRef",
                );
            }
            "Machine" => {
                let phase = o["status"]["phase"].as_str().unwrap_or("Pending");
                if phase != "Running" {
                    return Err(PivotError::Precondition(format!(
                        "Machine {} is {phase}, not Running",
                        e.name
                    )));
                }
                let infra = &o["spec"]["infrastructureRef"];
                require(
                    infra["kind"].as_str().unwrap_or("VSphereMachine"),
                    infra,
                    "Machine infrastructureRef",
                );
                let config = &o["spec"]["bootstrap"]["configRef"];
                require(
                    config["kind"].as_str().unwrap_or("KubeadmConfig"),
                    config,
                    "Machine bootstrap.configRef",
                );
                if let Some(secret) = o["spec"]["bootstrap"]["dataSecretName"].as_str() {
                    require(
                        "Secret",
                        &json!({"name": secret}),
                        "Machine bootstrap.dataSecretName",
                    );
                }
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PivotError::Precondition(problems.join("; ")))
    }
}

/// The two sides of one move and its journal.
struct Mover<'a> {
    source: &'a Client,
    target: &'a Client,
    namespace: &'a str,
    cluster: &'a str,
    journal: &'a Journal,
}

fn is_core(entry: &Entry) -> bool {
    !entry.api_version.contains('/')
}

fn is_the_cluster(entry: &Entry, cluster: &str) -> bool {
    entry.kind == "Cluster"
        && entry.api_version.starts_with("cluster.x-k8s.io/")
        && entry.name == cluster
}

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(PIVOT_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

impl Mover<'_> {
    fn api(&self, side: Side, entry: &Entry) -> Api<DynamicObject> {
        let client = match side {
            Side::Source => self.source,
            Side::Target => self.target,
        };
        Api::namespaced_with(client.clone(), self.namespace, &graph::resource_of(entry))
    }

    /// Merge-patches `entry` on `side`; a missing object is reported as `Ok(false)`.
    async fn patch(&self, side: Side, entry: &Entry, patch: &Value) -> Result<bool, PivotError> {
        match self
            .api(side, entry)
            .patch(&entry.name, &merge_params(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(PivotError::kube(side, "patching", entry.id())(e)),
        }
    }

    /// Sets (or clears) the pause on `side`: the Cluster's `spec.paused` and the annotation
    /// on the other Cluster API objects, leaving what was paused before the move as it was.
    async fn set_paused(
        &self,
        side: Side,
        record: &Record,
        paused: bool,
    ) -> Result<(), PivotError> {
        let cluster_first = paused;
        let annotation = if paused { json!("") } else { Value::Null };
        let cluster_patch = json!({"spec": {"paused": paused || record.cluster_was_paused}});
        if cluster_first {
            for e in record
                .objects
                .iter()
                .filter(|e| is_the_cluster(e, self.cluster))
            {
                self.patch(side, e, &cluster_patch).await?;
            }
        }
        for e in record.objects.iter().filter(|e| {
            !is_core(e) && !e.shared && !e.had_pause && !is_the_cluster(e, self.cluster)
        }) {
            let patch =
                json!({"metadata": {"annotations": {names::PAUSED_ANNOTATION: annotation}}});
            self.patch(side, e, &patch).await?;
        }
        if !cluster_first {
            for e in record
                .objects
                .iter()
                .filter(|e| is_the_cluster(e, self.cluster))
            {
                self.patch(side, e, &cluster_patch).await?;
            }
        }
        Ok(())
    }

    async fn pause_source(&self, stored: &mut Stored) -> Result<(), PivotError> {
        self.set_paused(Side::Source, &stored.record, true).await?;
        stored.record.state = State::Paused;
        stored.record.step("paused");
        self.journal.save(stored).await?;
        kill_point!("pivot-after-pause", self.cluster);
        Ok(())
    }

    async fn ensure_namespace(&self) -> Result<(), PivotError> {
        let api: Api<Namespace> = Api::all(self.target.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace},
        }))
        .map_err(|e| PivotError::Internal(format!("namespace object: {e}")))?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(PivotError::kube(
                Side::Target,
                "creating",
                format!("Namespace {}", self.namespace),
            )(e)),
        }
    }

    /// The uid map source → target of the entries created so far.
    fn uid_map(record: &Record) -> BTreeMap<String, String> {
        record
            .objects
            .iter()
            .filter_map(|e| e.target_uid.clone().map(|t| (e.source_uid.clone(), t)))
            .collect()
    }

    async fn create_all(&self, stored: &mut Stored) -> Result<(), PivotError> {
        self.ensure_namespace().await?;
        let plan_uids: BTreeSet<String> = stored
            .record
            .objects
            .iter()
            .map(|e| e.source_uid.clone())
            .collect();
        let count = stored.record.objects.len();
        for i in 0..count {
            if stored.record.objects[i].target_uid.is_some() {
                continue;
            }
            let entry = stored.record.objects[i].clone();
            let source_obj = self.get(Side::Source, &entry).await?.ok_or_else(|| {
                PivotError::Precondition(format!(
                    "{} disappeared from the source during the move",
                    entry.id()
                ))
            })?;
            let (body, pending) = target_body(
                &source_obj,
                &entry,
                &Self::uid_map(&stored.record),
                &plan_uids,
            );
            let (uid, pre_existing) = self.create_or_adopt(&entry, &body).await?;
            let slot = &mut stored.record.objects[i];
            slot.target_uid = Some(uid);
            slot.refs_pending = pending;
            slot.pre_existing = pre_existing;
            stored.record.step(format!("created:{}", entry.id()));
            self.journal.save(stored).await?;
            if i == count / 2 {
                kill_point!("pivot-mid-create", self.cluster);
            }
        }
        // References a cycle left out, now that every object exists.
        let map = Self::uid_map(&stored.record);
        for i in 0..count {
            if !stored.record.objects[i].refs_pending {
                continue;
            }
            let entry = stored.record.objects[i].clone();
            if let Some(source_obj) = self.get(Side::Source, &entry).await? {
                let (body, _) = target_body(&source_obj, &entry, &map, &plan_uids);
                let patch =
                    json!({"metadata": {"ownerReferences": body["metadata"]["ownerReferences"]}});
                self.patch(Side::Target, &entry, &patch).await?;
            }
            stored.record.objects[i].refs_pending = false;
            self.journal.save(stored).await?;
        }
        stored.record.state = State::Created;
        self.journal.save(stored).await?;
        kill_point!("pivot-after-create", self.cluster);
        Ok(())
    }

    async fn get(&self, side: Side, entry: &Entry) -> Result<Option<Value>, PivotError> {
        let obj = self
            .api(side, entry)
            .get_opt(&entry.name)
            .await
            .map_err(PivotError::kube(side, "reading", entry.id()))?;
        obj.map(|o| {
            let mut v = serde_json::to_value(&o)
                .map_err(|e| PivotError::Internal(format!("serializing {}: {e}", entry.id())))?;
            v["apiVersion"] = json!(entry.api_version);
            v["kind"] = json!(entry.kind);
            Ok(v)
        })
        .transpose()
    }

    /// Creates `body` in the target; if an object of that name exists, adopts it (updates it
    /// to `body`, unless it is shared). Returns its uid and whether it existed before the move.
    async fn create_or_adopt(
        &self,
        entry: &Entry,
        body: &Value,
    ) -> Result<(String, bool), PivotError> {
        let api = self.api(Side::Target, entry);
        let object: DynamicObject = serde_json::from_value(body.clone())
            .map_err(|e| PivotError::Internal(format!("{}: {e}", entry.id())))?;
        let params = PostParams {
            field_manager: Some(PIVOT_FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match api.create(&params, &object).await {
            Ok(created) => return Ok((created.metadata.uid.unwrap_or_default(), false)),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(PivotError::kube(Side::Target, "creating", entry.id())(e)),
        }
        let existing = self.get(Side::Target, entry).await?.ok_or_else(|| {
            PivotError::Internal(format!(
                "{} exists and does not exist in the target",
                entry.id()
            ))
        })?;
        let ours = existing["metadata"]["annotations"][SOURCE_UID_ANNOTATION].as_str()
            == Some(entry.source_uid.as_str());
        if !entry.shared {
            let mut patch = body.clone();
            if let Some(map) = patch.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
            self.patch(Side::Target, entry, &patch).await?;
        }
        let uid = existing["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((uid, !ours))
    }

    async fn copy_status(&self, stored: &mut Stored) -> Result<(), PivotError> {
        for entry in stored.record.objects.iter().filter(|e| e.status) {
            let Some(source_obj) = self.get(Side::Source, entry).await? else {
                continue;
            };
            if source_obj["status"].is_null() {
                continue;
            }
            let patch = json!({"status": source_obj["status"]});
            self.api(Side::Target, entry)
                .patch_status(&entry.name, &merge_params(), &Patch::Merge(&patch))
                .await
                .map_err(PivotError::kube(
                    Side::Target,
                    "copying the status of",
                    entry.id(),
                ))?;
        }
        stored.record.state = State::StatusCopied;
        stored.record.step("status-copied");
        self.journal.save(stored).await?;
        kill_point!("pivot-after-status", self.cluster);
        Ok(())
    }

    async fn delete_source(&self, stored: &mut Stored) -> Result<(), PivotError> {
        let plan_uids: BTreeSet<&str> = stored
            .record
            .objects
            .iter()
            .map(|e| e.source_uid.as_str())
            .collect();
        // Shared objects stay: first drop their references to the objects about to go, or
        // the garbage collector would delete them with their last owner.
        for entry in stored.record.objects.iter().filter(|e| e.shared) {
            let Some(obj) = self.get(Side::Source, entry).await? else {
                continue;
            };
            if let Some(refs) = obj["metadata"]["ownerReferences"].as_array() {
                let kept: Vec<&Value> = refs
                    .iter()
                    .filter(|r| !r["uid"].as_str().is_some_and(|u| plan_uids.contains(u)))
                    .collect();
                if kept.len() != refs.len() {
                    self.patch(
                        Side::Source,
                        entry,
                        &json!({"metadata": {"ownerReferences": kept}}),
                    )
                    .await?;
                }
            }
        }
        let doomed: Vec<Entry> = stored
            .record
            .objects
            .iter()
            .rev()
            .filter(|e| !e.shared)
            .cloned()
            .collect();
        let half = doomed.len() / 2;
        for (i, entry) in doomed.iter().enumerate() {
            let uid = entry.source_uid.clone();
            delete_exact(&self.api(Side::Source, entry), entry, Side::Source, |o| {
                o.metadata.uid.as_deref() == Some(uid.as_str())
            })
            .await?;
            if i == half {
                kill_point!("pivot-mid-delete", self.cluster);
            }
        }
        stored.record.state = State::SourceDeleted;
        stored.record.step("deleted-source");
        self.journal.save(stored).await?;
        kill_point!("pivot-after-delete", self.cluster);
        Ok(())
    }

    async fn unpause_target(&self, stored: &mut Stored) -> Result<(), PivotError> {
        self.set_paused(Side::Target, &stored.record, false).await?;
        stored.record.state = State::Done;
        stored.record.step("unpaused");
        stored.record.step("done");
        stored.record.finished_at = Some(now());
        self.journal.save(stored).await?;
        kill_point!("pivot-after-unpause", self.cluster);
        Ok(())
    }

    async fn roll_back(&self, stored: &mut Stored) -> Result<(), PivotError> {
        // The copies in the target are paused, so unpausing the source first never makes two
        // active copies.
        if !stored.record.steps.iter().any(|s| s == "source-unpaused") {
            self.set_paused(Side::Source, &stored.record, false).await?;
            stored.record.step("source-unpaused");
            self.journal.save(stored).await?;
        }
        let mut leftovers = false;
        for entry in stored
            .record
            .objects
            .iter()
            .rev()
            .filter(|e| !e.pre_existing)
        {
            let source_uid = entry.source_uid.clone();
            let target_uid = entry.target_uid.clone();
            let result = delete_exact(&self.api(Side::Target, entry), entry, Side::Target, |o| {
                o.metadata.uid == target_uid
                    || o.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(SOURCE_UID_ANNOTATION))
                        == Some(&source_uid)
            })
            .await;
            match result {
                Ok(()) => {}
                Err(err) if err.is_target_unreachable() => {
                    tracing::warn!(%err, "Target unreachable: paused copies stay there until the next attempt");
                    leftovers = true;
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        stored.record.target_leftovers = leftovers;
        stored.record.state = State::RolledBack;
        stored.record.step("rolled-back");
        stored.record.finished_at = Some(now());
        self.journal.save(stored).await?;
        Ok(())
    }
}

/// The object to create in the target from `source_obj`: server-owned fields and finalizers
/// dropped, status left to the status step, owner references remapped to the target's uids
/// (references to objects outside the plan dropped; to objects not created yet: left out,
/// and `true` returned so they are added later).
fn target_body(
    source_obj: &Value,
    entry: &Entry,
    uid_map: &BTreeMap<String, String>,
    plan_uids: &BTreeSet<String>,
) -> (Value, bool) {
    let mut body = source_obj.clone();
    let mut pending = false;
    let refs: Vec<Value> = source_obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| {
                    let uid = r["uid"].as_str().unwrap_or_default();
                    match uid_map.get(uid) {
                        Some(new) => {
                            let mut r = r.clone();
                            r["uid"] = json!(new);
                            Some(r)
                        }
                        None => {
                            pending |= plan_uids.contains(uid);
                            None
                        }
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(meta) = body["metadata"].as_object_mut() {
        for key in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "finalizers",
            "ownerReferences",
        ] {
            meta.remove(key);
        }
        if !refs.is_empty() {
            meta.insert("ownerReferences".to_string(), Value::Array(refs));
        }
        if !entry.shared {
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if !annotations.is_object() {
                *annotations = json!({});
            }
            annotations[SOURCE_UID_ANNOTATION] = json!(entry.source_uid);
        }
    }
    if let Some(map) = body.as_object_mut() {
        map.remove("status");
    }
    (body, pending)
}

/// Deletes `entry` if it exists and `is_ours` accepts it: first its finalizers are removed,
/// then it is deleted with uid and resourceVersion preconditions, so a controller that re-adds
/// a finalizer in between makes the delete fail (and retry) rather than start a deletion that
/// controller would act on (destroying a VM that must survive the move).
async fn delete_exact(
    api: &Api<DynamicObject>,
    entry: &Entry,
    side: Side,
    is_ours: impl Fn(&DynamicObject) -> bool,
) -> Result<(), PivotError> {
    const ATTEMPTS: usize = 10;
    for _ in 0..ATTEMPTS {
        let Some(mut obj) = api.get_opt(&entry.name).await.map_err(PivotError::kube(
            side,
            "reading",
            entry.id(),
        ))?
        else {
            return Ok(());
        };
        if !is_ours(&obj) {
            return Ok(());
        }
        if obj
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
        {
            let patch = json!({"metadata": {
                "finalizers": null,
                "resourceVersion": obj.metadata.resource_version,
            }});
            obj = match api
                .patch(&entry.name, &merge_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(o) => o,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => {
                    return Err(PivotError::kube(
                        side,
                        "removing the finalizers of",
                        entry.id(),
                    )(e));
                }
            };
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.metadata.uid.clone(),
                resource_version: obj.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&entry.name, &params).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(PivotError::kube(side, "deleting", entry.id())(e)),
        }
    }
    Err(PivotError::Internal(format!(
        "{}: deletion kept conflicting with another writer",
        entry.id()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_body_remaps_owners_and_strips_server_fields() {
        let entry = Entry {
            api_version: "cluster.x-k8s.io/v1beta2".into(),
            kind: "Machine".into(),
            plural: "machines".into(),
            name: "m".into(),
            source_uid: "s-m".into(),
            ..Entry::default()
        };
        let source = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {
                "name": "m", "namespace": "ns", "uid": "s-m", "resourceVersion": "9",
                "finalizers": ["machine.cluster.x-k8s.io"],
                "ownerReferences": [
                    {"kind": "KubeadmControlPlane", "name": "kcp", "uid": "s-kcp"},
                    {"kind": "Other", "name": "o", "uid": "outside"},
                    {"kind": "MachineSet", "name": "later", "uid": "s-later"},
                ],
            },
            "spec": {"providerID": "vsphere://1"},
            "status": {"phase": "Running"},
        });
        let map = BTreeMap::from([("s-kcp".to_string(), "t-kcp".to_string())]);
        let plan = BTreeSet::from([
            "s-kcp".to_string(),
            "s-later".to_string(),
            "s-m".to_string(),
        ]);
        let (body, pending) = target_body(&source, &entry, &map, &plan);
        assert!(pending);
        assert_eq!(
            body["metadata"]["ownerReferences"],
            json!([{"kind": "KubeadmControlPlane", "name": "kcp", "uid": "t-kcp"}])
        );
        assert!(body["metadata"]["uid"].is_null());
        assert!(body["metadata"]["finalizers"].is_null());
        assert!(body["status"].is_null());
        assert_eq!(body["spec"]["providerID"], "vsphere://1");
        assert_eq!(
            body["metadata"]["annotations"][SOURCE_UID_ANNOTATION],
            "s-m"
        );
    }

    #[test]
    fn unreachable_means_the_target_not_answering() {
        let api_error = |code| {
            kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            )
        };
        let target = |code| PivotError::kube(Side::Target, "reading", "x")(api_error(code));
        assert!(!target(409).is_target_unreachable());
        assert!(target(503).is_target_unreachable());
        let source = PivotError::kube(Side::Source, "reading", "x")(api_error(503));
        assert!(!source.is_target_unreachable());
    }
}
