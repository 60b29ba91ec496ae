//! Server-side apply and `managedFields` tracking, after Kubernetes' field manager and
//! structured-merge-diff.
//!
//! Every write records which manager owns which fields. An apply merges the applied
//! configuration into the live object (associative lists per element, sets by value, atomic
//! lists and maps whole), fails with conflicts when it would change fields other managers own
//! (unless forced, which transfers ownership), and removes the fields its manager applied last
//! time but no longer applies when nobody else owns them. Non-apply writes
//! ([`track_update`]) give the writer the fields it changed and take them from everyone else.

use super::fields::{self, FieldSet, Leaves, PathKey};
use super::{ListKeys, ListType, WithMetadata};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The annotation client-side `kubectl apply` keeps its last applied configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Maximum number of `Update` entries before the oldest are merged into [`ANCIENT_CHANGES`].
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";
/// Owner of the fields of an object that had no `managedFields` when first applied.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// `metadata` fields the field manager never tracks.
const UNTRACKED_METADATA: &[&str] = &[
    "f:name",
    "f:namespace",
    "f:creationTimestamp",
    "f:selfLink",
    "f:uid",
    "f:clusterName",
    "f:generation",
    "f:managedFields",
    "f:resourceVersion",
    "f:deletionTimestamp",
    "f:deletionGracePeriodSeconds",
];

/// Parameters of a server-side apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions<'a> {
    /// The `fieldManager` query parameter (required for apply).
    pub manager: &'a str,
    /// The `force` query parameter: take ownership of conflicting fields.
    pub force: bool,
    /// `Some("status")` when applying to the status subresource.
    pub subresource: Option<&'a str>,
    /// Whether the resource type has a status subresource: then `status` is ignored (neither
    /// merged nor tracked) on the main resource, and only `status` is considered on the
    /// status subresource.
    pub has_status_subresource: bool,
    /// Current time, RFC 3339 with second precision (`2024-01-02T03:04:05Z`).
    pub now: &'a str,
}

/// Parameters of a non-apply write (create, update, any non-apply patch).
#[derive(Debug, Clone)]
pub struct UpdateOptions<'a> {
    /// The `fieldManager` (or the default the server derives from the user agent).
    pub manager: &'a str,
    /// `Some("status")`/`Some("scale")` for subresource writes.
    pub subresource: Option<&'a str>,
    /// Whether the resource type has a status subresource (see [`ApplyOptions`]).
    pub has_status_subresource: bool,
    /// Current time, RFC 3339 with second precision.
    pub now: &'a str,
}

/// One field an apply would take from another manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Name of the manager owning the field.
    pub manager: String,
    /// Operation of the owning entry: `Apply` or `Update`.
    pub operation: String,
    /// The subresource of the owning entry, if any.
    pub subresource: Option<String>,
    /// API version of the owning entry.
    pub api_version: String,
    /// The field, formatted like the real server (`.spec.replicas`,
    /// `.spec.containers[name="nginx"].image`).
    pub field: String,
}

impl Conflict {
    /// The manager as the API server prints it: `"kubectl"` for appliers,
    /// `"mgr" using apps/v1` for updaters, with `with subresource "status"` when relevant.
    pub fn manager_description(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// The `message` of this conflict's `Status.details.causes[]` entry
    /// (type `FieldManagerConflict`, field [`Conflict::field`]).
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }
}

/// The conflicts that made an apply fail (HTTP 409, reason `Conflict`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conflicts(pub Vec<Conflict>);

impl Conflicts {
    /// The `Status.message`, worded like the real API server:
    /// `Apply failed with 1 conflict: conflict with "other" using apps/v1: .spec.replicas`.
    pub fn message(&self) -> String {
        match self.0.as_slice() {
            [one] => format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                one.manager_description(),
                one.field
            ),
            all => {
                let mut by_manager: BTreeMap<String, Vec<&str>> = BTreeMap::new();
                for c in all {
                    by_manager
                        .entry(c.manager_description())
                        .or_default()
                        .push(&c.field);
                }
                let mut lines = Vec::new();
                for (m, fields) in by_manager {
                    lines.push(format!("conflicts with {m}:"));
                    lines.extend(fields.iter().map(|f| format!("- {f}")));
                }
                format!(
                    "Apply failed with {} conflicts: {}",
                    all.len(),
                    lines.join("\n")
                )
            }
        }
    }
}

impl std::fmt::Display for Conflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields are owned by other managers and `force` was not set (HTTP 409, reason
    /// `Conflict`, one `FieldManagerConflict` cause per conflict).
    #[error("{0}")]
    Conflict(Conflicts),
    /// The applied configuration is invalid (HTTP 400 BadRequest).
    #[error("{0}")]
    Invalid(String),
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
}

impl Entry {
    /// Entries with the same identity are one manager (apiVersion only counts for updaters,
    /// as in Kubernetes' `BuildManagerIdentifier`).
    fn same_identity(
        &self,
        manager: &str,
        operation: &str,
        subresource: Option<&str>,
        api_version: &str,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
            && (operation == "Apply" || self.api_version == api_version)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }

    fn conflict(&self, path: &PathKey) -> Conflict {
        Conflict {
            manager: self.manager.clone(),
            operation: self.operation.clone(),
            subresource: self.subresource.clone(),
            api_version: self.api_version.clone(),
            field: fields::format_path(path),
        }
    }
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Decodes `metadata.managedFields`; malformed entries are dropped (the real server falls
/// back to ignoring undecodable managed fields rather than failing the write).
fn decode_managed(list: Option<&Value>) -> Vec<Entry> {
    let Some(Value::Array(items)) = list else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| {
            Some(Entry {
                manager: str_field(e, "manager")?,
                operation: str_field(e, "operation").unwrap_or_else(|| "Update".into()),
                api_version: str_field(e, "apiVersion").unwrap_or_default(),
                time: str_field(e, "time"),
                subresource: str_field(e, "subresource"),
                set: FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

/// Sorted like Kubernetes' `sortEncodedManagedFields`: operation, time, manager,
/// apiVersion, subresource.
fn encode_managed(mut entries: Vec<Entry>) -> Option<Value> {
    entries.retain(|e| !e.set.is_empty());
    if entries.is_empty() {
        return None;
    }
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    Some(Value::Array(entries.iter().map(Entry::to_json).collect()))
}

fn set_managed(obj: &mut Value, entries: Vec<Entry>) {
    let encoded = encode_managed(entries);
    let Value::Object(root) = obj else {
        return;
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        match encoded {
            Some(v) => {
                meta.insert("managedFields".into(), v);
            }
            None => {
                meta.remove("managedFields");
            }
        }
    }
}

/// Which top-level parts of the object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    ExcludeStatus,
    OnlyStatus,
}

fn scope_of(subresource: Option<&str>, has_status_subresource: bool) -> Scope {
    match subresource {
        Some("status") => Scope::OnlyStatus,
        _ if has_status_subresource => Scope::ExcludeStatus,
        _ => Scope::All,
    }
}

/// Whether the field manager tracks the member `path` in this scope.
fn tracked(path: &PathKey, scope: Scope) -> bool {
    let Some(first) = path.first() else {
        return false;
    };
    match first.as_str() {
        "f:apiVersion" | "f:kind" => return false,
        "f:metadata" => match path.get(1) {
            None => return false,
            Some(f) if UNTRACKED_METADATA.contains(&f.as_str()) => return false,
            Some(_) => {}
        },
        _ => {}
    }
    match scope {
        Scope::All => true,
        Scope::ExcludeStatus => first != "f:status",
        Scope::OnlyStatus => first == "f:status",
    }
}

fn tracked_leaves(
    v: &Value,
    keys: &dyn ListKeys,
    scope: Scope,
    strict: bool,
) -> Result<Leaves, fields::DuplicateKey> {
    let mut l = fields::leaves(v, keys, strict)?;
    l.retain(|p, _| tracked(p, scope));
    Ok(l)
}

/// Field-level difference between two objects.
struct Comparison {
    added: FieldSet,
    removed: FieldSet,
    modified: FieldSet,
}

impl Comparison {
    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

fn compare(old: &Leaves, new: &Leaves) -> Comparison {
    let mut c = Comparison {
        added: FieldSet::new(),
        removed: FieldSet::new(),
        modified: FieldSet::new(),
    };
    for (p, v) in old {
        match new.get(p) {
            None => c.removed.insert(p),
            Some(nv) if nv != v => c.modified.insert(p),
            Some(_) => {}
        }
    }
    for p in new.keys() {
        if !old.contains_key(p) {
            c.added.insert(p);
        }
    }
    c
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(Value::Object(meta)) = v.get_mut("metadata") {
        meta.remove("managedFields");
    }
    v
}

/// Restricts `result` to the scope of the write: parts outside it keep their live values.
fn restore_out_of_scope(result: &mut Value, live: &Value, scope: Scope) {
    match scope {
        Scope::All => {}
        Scope::ExcludeStatus => {
            if let Value::Object(r) = result {
                match live.get("status") {
                    Some(s) => {
                        r.insert("status".into(), s.clone());
                    }
                    None => {
                        r.remove("status");
                    }
                }
            }
        }
        Scope::OnlyStatus => {
            let status = result.get("status").cloned();
            let mut out = live.clone();
            if let Value::Object(o) = &mut out {
                match status {
                    Some(s) => {
                        o.insert("status".into(), s);
                    }
                    None => {
                        o.remove("status");
                    }
                }
            }
            *result = out;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Structured merge of an applied configuration into the live object.
// ---------------------------------------------------------------------------------------

fn merge_value(
    lhs: Option<&Value>,
    rhs: &Value,
    keys: &dyn ListKeys,
    path: &mut Vec<String>,
) -> Value {
    // An owned copy: `path` is extended while `p` is still in use.
    let here = path.clone();
    let p: Vec<&str> = here.iter().map(String::as_str).collect();
    match (lhs, rhs) {
        (Some(Value::Object(l)), Value::Object(r)) if !keys.map_is_atomic(&p) => {
            let mut out = l.clone();
            for (k, rv) in r {
                path.push(k.clone());
                let merged = merge_value(l.get(k), rv, keys, path);
                path.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(Value::Array(l)), Value::Array(r)) => {
            let ids = |items: &[Value]| -> Option<Vec<String>> {
                match keys.list_type(&p) {
                    Some(ListType::Map(kf)) => items
                        .iter()
                        .map(|i| fields::element_key(i, &kf, keys, &p))
                        .collect(),
                    Some(ListType::Set) => Some(items.iter().map(fields::value_element).collect()),
                    _ => None,
                }
            };
            match (ids(l), ids(r)) {
                (Some(lid), Some(rid)) => {
                    let is_map = matches!(keys.list_type(&p), Some(ListType::Map(_)));
                    Value::Array(merge_list(l, r, &lid, &rid, |lc, rc| {
                        if is_map {
                            merge_value(lc, rc, keys, path)
                        } else {
                            rc.clone()
                        }
                    }))
                }
                _ => rhs.clone(),
            }
        }
        _ => rhs.clone(),
    }
}

/// Merges two keyed lists keeping live order for live-only items and applied order for the
/// others, like structured-merge-diff's `visitListItems`.
fn merge_list(
    l: &[Value],
    r: &[Value],
    lid: &[String],
    rid: &[String],
    mut merge_item: impl FnMut(Option<&Value>, &Value) -> Value,
) -> Vec<Value> {
    let mut observed_l: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, id) in lid.iter().enumerate() {
        observed_l.entry(id.as_str()).or_insert(i);
    }
    let observed_r: BTreeSet<&str> = rid.iter().map(String::as_str).collect();
    let shared: Vec<&str> = rid
        .iter()
        .map(String::as_str)
        .filter(|id| observed_l.contains_key(id))
        .collect();
    let mut next_shared = 0usize;
    let mut merged_r: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(l.len().max(r.len()));
    let (mut li, mut ri) = (0, 0);
    while li < l.len() || ri < r.len() {
        if li < l.len() && ri < r.len() {
            if lid[li] == rid[ri] {
                merged_r.insert(&rid[ri]);
                out.push(merge_item(Some(&l[li]), &r[ri]));
                if shared.get(next_shared) == Some(&rid[ri].as_str()) {
                    next_shared += 1;
                }
                li += 1;
                ri += 1;
                continue;
            }
            if observed_r.contains(lid[li].as_str())
                && shared.get(next_shared).is_some_and(|s| *s != lid[li])
            {
                li += 1;
                continue;
            }
        }
        if li < l.len() {
            if !observed_r.contains(lid[li].as_str()) {
                out.push(l[li].clone());
                li += 1;
                continue;
            } else if merged_r.contains(lid[li].as_str()) {
                li += 1;
                continue;
            }
        }
        if ri < r.len() {
            let id = rid[ri].as_str();
            merged_r.insert(id);
            let lchild = observed_l.get(id).map(|&i| &l[i]);
            out.push(merge_item(lchild, &r[ri]));
            if shared.get(next_shared) == Some(&id) {
                next_shared += 1;
            }
            ri += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Removal of fields no longer applied.
// ---------------------------------------------------------------------------------------

fn is_nonempty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

/// Removes the members of `rm` from `v`. A map or list emptied by the removal is removed too
/// unless someone (in `keep`) still owns something under it.
fn remove_fields(
    v: &mut Value,
    rm: &FieldSet,
    keep: &FieldSet,
    keys: &dyn ListKeys,
    path: &mut Vec<String>,
    enc: &mut Vec<String>,
) {
    match v {
        Value::Object(m) => {
            let fields_to_visit: Vec<(String, String)> = m
                .keys()
                .map(|k| (k.clone(), format!("f:{k}")))
                .filter(|(_, e)| rm.child(e).is_some())
                .collect();
            for (k, e) in fields_to_visit {
                let Some(child) = rm.child(&e) else {
                    continue;
                };
                if child.is_member() {
                    m.remove(&k);
                    continue;
                }
                let Some(cv) = m.get_mut(&k) else {
                    continue;
                };
                let was_nonempty = is_nonempty_container(cv);
                path.push(k.clone());
                enc.push(e);
                remove_fields(cv, child, keep, keys, path, enc);
                if was_nonempty && !is_nonempty_container(cv) && !keep.has_prefix(enc) {
                    m.remove(&k);
                }
                enc.pop();
                path.pop();
            }
        }
        Value::Array(items) => {
            // An owned copy: `path` is extended while `p` is still in use.
            let here = path.clone();
            let p: Vec<&str> = here.iter().map(String::as_str).collect();
            match keys.list_type(&p) {
                Some(ListType::Map(kf)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for mut item in std::mem::take(items) {
                        let id = fields::element_key(&item, &kf, keys, &p);
                        match id
                            .as_deref()
                            .and_then(|id| rm.child(id).map(|c| (id.to_string(), c)))
                        {
                            Some((_, c)) if c.is_member() => {}
                            Some((id, c)) => {
                                enc.push(id);
                                remove_fields(&mut item, c, keep, keys, path, enc);
                                enc.pop();
                                out.push(item);
                            }
                            None => out.push(item),
                        }
                    }
                    *items = out;
                }
                Some(ListType::Set) => {
                    items.retain(|i| {
                        !rm.child(&fields::value_element(i))
                            .is_some_and(FieldSet::is_member)
                    });
                }
                _ => {}
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Public operations.
// ---------------------------------------------------------------------------------------

fn invalid(e: fields::DuplicateKey) -> ApplyError {
    ApplyError::Invalid(format!("duplicate entries for key {}", e.0))
}

/// The fields of the live object that kubectl's last-applied annotation accounts for, when
/// the live object still matches it: conflicts on those are allowed when `kubectl apply
/// --server-side` takes over from client-side apply.
fn allowed_from_last_applied(live: &Value, keys: &dyn ListKeys, scope: Scope) -> Option<FieldSet> {
    let raw = live
        .get("metadata")?
        .get("annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(raw).ok()?;
    let last_leaves = tracked_leaves(&last, keys, scope, false).ok()?;
    let live_leaves = tracked_leaves(live, keys, scope, false).ok()?;
    let same = last_leaves
        .iter()
        .all(|(p, v)| live_leaves.get(p) == Some(v));
    same.then(|| fields::set_of(&last_leaves))
}

/// Server-side apply (`PATCH` with `application/apply-patch+yaml`, body already converted to
/// JSON) of `applied` onto `live` (`None`: create-on-apply).
///
/// Returns the new object with `metadata.managedFields` updated (the server still sets
/// `resourceVersion`, `uid`, `creationTimestamp`, `generation` ...). Errors:
/// [`ApplyError::Conflict`] when fields owned by other managers would change and
/// `opts.force` is false; [`ApplyError::Invalid`] for a configuration that is not an object,
/// lacks `apiVersion`/`kind`, sets `metadata.managedFields` or repeats a list key.
///
/// Semantics: associative lists merge per element, sets by value, atomic lists/maps are
/// replaced; fields this manager applied last time but not now are removed unless another
/// manager owns them; forced conflicts move ownership to this manager; other managers lose
/// fields the apply removed. For manager `kubectl`, conflicts on fields recorded in a
/// still-accurate `last-applied-configuration` annotation are allowed (the real server's
/// client-side to server-side apply upgrade) and that annotation is kept in sync.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    keys: &dyn ListKeys,
    opts: &ApplyOptions<'_>,
) -> Result<Value, ApplyError> {
    let keys = WithMetadata(keys);
    let keys: &dyn ListKeys = &keys;
    let Value::Object(cfg) = applied else {
        return Err(ApplyError::Invalid(
            "the applied configuration must be an object".into(),
        ));
    };
    let api_version = str_field(applied, "apiVersion").ok_or_else(|| {
        ApplyError::Invalid("apiVersion must be set in the applied configuration".into())
    })?;
    if str_field(applied, "kind").is_none() {
        return Err(ApplyError::Invalid(
            "kind must be set in the applied configuration".into(),
        ));
    }
    if applied
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let scope = scope_of(opts.subresource, opts.has_status_subresource);
    let live_full = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let live_obj = without_managed_fields(&live_full);
    let mut entries = decode_managed(
        live_full
            .get("metadata")
            .and_then(|m| m.get("managedFields")),
    );
    let live_leaves = tracked_leaves(&live_obj, keys, scope, false).map_err(invalid)?;
    if live.is_some() && entries.is_empty() && !live_leaves.is_empty() {
        // Objects written before any field tracking: their fields belong to a pseudo updater
        // so that an apply does not silently take them.
        entries.push(Entry {
            manager: BEFORE_FIRST_APPLY.into(),
            operation: "Update".into(),
            api_version: str_field(&live_obj, "apiVersion").unwrap_or_else(|| api_version.clone()),
            time: None,
            subresource: None,
            set: fields::set_of(&live_leaves),
        });
    }

    // Only the in-scope part of the configuration is merged. Nulls mean "not set" (a typed
    // decode of the configuration would drop them).
    let mut config = Value::Object(cfg.clone());
    drop_nulls(&mut config);
    restore_out_of_scope(&mut config, &Value::Object(Map::new()), scope);
    if scope == Scope::OnlyStatus {
        config = match applied.get("status") {
            Some(s) => serde_json::json!({ "status": s }),
            None => Value::Object(Map::new()),
        };
    }
    let config_leaves = tracked_leaves(&config, keys, scope, true).map_err(invalid)?;
    let config_set = fields::set_of(&config_leaves);

    let mut path = Vec::new();
    let mut merged = merge_value(Some(&live_obj), &config, keys, &mut path);

    let mine = entries
        .iter()
        .position(|e| e.same_identity(opts.manager, "Apply", opts.subresource, &api_version));
    let previous = mine.map(|i| entries.remove(i));

    // Prune what this manager applied last time, no longer applies and nobody else owns.
    if let Some(prev) = &previous {
        let mut owned = config_set.clone();
        for e in &entries {
            owned = owned.union(&e.set);
        }
        let to_remove = prev.set.difference(&owned);
        if !to_remove.is_empty() {
            remove_fields(
                &mut merged,
                &to_remove,
                &owned,
                keys,
                &mut Vec::new(),
                &mut Vec::new(),
            );
        }
    }
    restore_out_of_scope(&mut merged, &live_obj, scope);

    let merged_leaves = tracked_leaves(&merged, keys, scope, false).map_err(invalid)?;
    let cmp = compare(&live_leaves, &merged_leaves);
    let changed = cmp.changed();

    let mut conflicts: Vec<(usize, FieldSet)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let c = e.set.intersection(&changed);
        if !c.is_empty() {
            conflicts.push((i, c));
        }
    }
    if !conflicts.is_empty() && !opts.force {
        let allowed = if opts.manager == "kubectl" && live.is_some() {
            allowed_from_last_applied(&live_obj, keys, scope)
        } else {
            None
        };
        let remaining: Vec<(usize, FieldSet)> = conflicts
            .iter()
            .map(|(i, c)| {
                (
                    *i,
                    allowed
                        .as_ref()
                        .map_or_else(|| c.clone(), |a| c.difference(a)),
                )
            })
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !remaining.is_empty() {
            let mut list: Vec<Conflict> = remaining
                .iter()
                .flat_map(|(i, c)| {
                    c.members()
                        .into_iter()
                        .map(|p| entries[*i].conflict(&p))
                        .collect::<Vec<_>>()
                })
                .collect();
            list.sort_by(|a, b| {
                (&a.manager, &a.operation, &a.field).cmp(&(&b.manager, &b.operation, &b.field))
            });
            return Err(ApplyError::Conflict(Conflicts(list)));
        }
    }
    for (i, c) in &conflicts {
        entries[*i].set = entries[*i].set.difference(c);
    }
    for e in &mut entries {
        e.set = e.set.difference(&cmp.removed);
    }

    let object_changed = live.is_none() || merged != live_obj;
    let time = match &previous {
        Some(p) if !object_changed => p.time.clone(),
        _ => Some(opts.now.to_string()),
    };
    entries.push(Entry {
        manager: opts.manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.clone(),
        time,
        subresource: opts.subresource.map(str::to_string),
        set: config_set,
    });

    if opts.manager == "kubectl"
        && let Some(Value::Object(ann)) = merged
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
        && ann.contains_key(LAST_APPLIED)
    {
        let mut last = applied.clone();
        if let Some(Value::Object(a)) = last
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
        {
            a.remove(LAST_APPLIED);
        }
        ann.insert(LAST_APPLIED.into(), Value::String(last.to_string()));
    }

    set_managed(&mut merged, entries);
    Ok(merged)
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Whether the request replaces managed fields with the reset marker `[{}]`.
fn is_reset(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Array(a)) if a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty))
}

/// Records a non-apply write (create, update, merge/JSON/strategic patch) in
/// `metadata.managedFields` and returns `new` with the updated entries.
///
/// The fields the write changed or added become owned by `opts.manager` (operation `Update`,
/// entry merged with its previous one of the same manager, subresource and apiVersion);
/// every other entry loses the fields that changed or were removed, so a later apply of a
/// different value conflicts. A write that changes nothing leaves `managedFields` as they
/// were. A request carrying its own `managedFields` replaces the tracked state (`[{}]`
/// clears it), except on subresources, as with the real server.
pub fn track_update(
    old: Option<&Value>,
    new: &Value,
    keys: &dyn ListKeys,
    opts: &UpdateOptions<'_>,
) -> Value {
    let keys = WithMetadata(keys);
    let keys: &dyn ListKeys = &keys;
    let scope = scope_of(opts.subresource, opts.has_status_subresource);
    let old_mf = old
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("managedFields"));
    let new_mf = new.get("metadata").and_then(|m| m.get("managedFields"));
    let mut entries = if opts.subresource.is_some() {
        decode_managed(old_mf)
    } else if is_reset(new_mf) {
        Vec::new()
    } else {
        let provided = decode_managed(new_mf);
        if provided.is_empty() {
            decode_managed(old_mf)
        } else {
            provided
        }
    };

    let old_obj = old
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut result = without_managed_fields(new);
    let (Ok(old_leaves), Ok(new_leaves)) = (
        tracked_leaves(&old_obj, keys, scope, false),
        tracked_leaves(&result, keys, scope, false),
    ) else {
        // Unreachable with strict=false; keep the previous entries rather than fail a write.
        set_managed(&mut result, entries);
        return result;
    };
    let cmp = compare(&old_leaves, &new_leaves);
    let changed = cmp.changed();
    let touched = changed.union(&cmp.removed);
    for e in &mut entries {
        e.set = e.set.difference(&touched);
    }
    if !changed.is_empty() {
        let api_version = str_field(new, "apiVersion").unwrap_or_default();
        match entries
            .iter_mut()
            .find(|e| e.same_identity(opts.manager, "Update", opts.subresource, &api_version))
        {
            Some(e) => {
                e.set = e.set.union(&changed);
                e.time = Some(opts.now.to_string());
            }
            None => entries.push(Entry {
                manager: opts.manager.to_string(),
                operation: "Update".into(),
                api_version,
                time: Some(opts.now.to_string()),
                subresource: opts.subresource.map(str::to_string),
                set: changed,
            }),
        }
    }
    entries.retain(|e| !e.set.is_empty());
    cap_update_managers(&mut entries);
    set_managed(&mut result, entries);
    result
}

/// Merges the oldest `Update` entries into one `ancient-changes` entry when there are more
/// than [`MAX_UPDATE_MANAGERS`], as the real server does to bound `managedFields`.
fn cap_update_managers(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].operation == "Update")
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|&a, &b| entries[a].time.cmp(&entries[b].time));
    let excess = updaters.len() - MAX_UPDATE_MANAGERS + 1;
    let oldest: BTreeSet<usize> = updaters.into_iter().take(excess).collect();
    let mut bucket: Option<Entry> = None;
    let mut kept = Vec::with_capacity(entries.len());
    for (i, e) in std::mem::take(entries).into_iter().enumerate() {
        if !oldest.contains(&i) {
            kept.push(e);
            continue;
        }
        bucket = Some(match bucket {
            None => Entry {
                manager: ANCIENT_CHANGES.into(),
                subresource: None,
                ..e
            },
            Some(b) => Entry {
                set: b.set.union(&e.set),
                time: b.time.max(e.time),
                api_version: e.api_version,
                ..b
            },
        });
    }
    kept.extend(bucket);
    *entries = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{BuiltinListKeys, NoListKeys, builtin_list_keys};
    use serde_json::json;

    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-01-01T00:01:00Z";

    fn deploy_keys() -> BuiltinListKeys {
        builtin_list_keys("apps", "Deployment")
    }

    fn do_apply(
        live: Option<&Value>,
        cfg: Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApplyError> {
        apply(
            live,
            &cfg,
            &deploy_keys(),
            &ApplyOptions {
                manager,
                force,
                subresource: None,
                has_status_subresource: true,
                now: T1,
            },
        )
    }

    fn update(
        old: Option<&Value>,
        new: &Value,
        manager: &str,
        subresource: Option<&str>,
        now: &str,
    ) -> Value {
        track_update(
            old,
            new,
            &deploy_keys(),
            &UpdateOptions {
                manager,
                subresource,
                has_status_subresource: true,
                now,
            },
        )
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": data})
    }

    fn deploy(replicas: i64, containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}})
    }

    fn managers(v: &Value) -> Vec<(String, String)> {
        v["metadata"]["managedFields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["manager"].as_str().unwrap_or("").to_string(),
                            e["operation"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn fields_of(v: &Value, manager: &str) -> Value {
        v["metadata"]["managedFields"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["manager"] == manager))
            .map(|e| e["fieldsV1"].clone())
            .unwrap_or(Value::Null)
    }

    fn conflicts(r: Result<Value, ApplyError>) -> Conflicts {
        match r {
            Err(ApplyError::Conflict(c)) => c,
            other => Conflicts(vec![Conflict {
                manager: format!("unexpected: {other:?}"),
                operation: String::new(),
                subresource: None,
                api_version: String::new(),
                field: String::new(),
            }]),
        }
    }

    #[test]
    fn create_on_apply_records_the_entry() -> Result<(), ApplyError> {
        let out = do_apply(None, cm(json!({"key": "v"})), "mgr-a", false)?;
        assert_eq!(out["data"], json!({"key": "v"}));
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{"manager": "mgr-a", "operation": "Apply", "apiVersion": "v1", "time": T1,
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:key": {}}}}])
        );
        Ok(())
    }

    #[test]
    fn two_appliers_share_the_object() -> Result<(), ApplyError> {
        let a = do_apply(None, cm(json!({"a": "1"})), "a", false)?;
        let b = do_apply(Some(&a), cm(json!({"b": "2"})), "b", false)?;
        assert_eq!(b["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(fields_of(&b, "a"), json!({"f:data": {"f:a": {}}}));
        assert_eq!(fields_of(&b, "b"), json!({"f:data": {"f:b": {}}}));
        // Applying the same value as another applier is not a conflict: ownership is shared.
        let c = do_apply(Some(&b), cm(json!({"a": "1"})), "c", false)?;
        assert_eq!(fields_of(&c, "c"), json!({"f:data": {"f:a": {}}}));
        assert_eq!(fields_of(&c, "a"), json!({"f:data": {"f:a": {}}}));
        Ok(())
    }

    #[test]
    fn conflict_then_force_transfers_ownership() -> Result<(), ApplyError> {
        let a = do_apply(None, cm(json!({"key": "1", "other": "x"})), "a", false)?;
        let c = conflicts(do_apply(Some(&a), cm(json!({"key": "2"})), "b", false));
        assert_eq!(
            c.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .data.key"
        );
        assert_eq!(c.0[0].field, ".data.key");
        assert_eq!(c.0[0].cause_message(), "conflict with \"a\"");
        let forced = do_apply(Some(&a), cm(json!({"key": "2"})), "b", true)?;
        assert_eq!(forced["data"]["key"], "2");
        assert_eq!(fields_of(&forced, "b"), json!({"f:data": {"f:key": {}}}));
        assert_eq!(fields_of(&forced, "a"), json!({"f:data": {"f:other": {}}}));
        // The former owner now conflicts in turn.
        let c = conflicts(do_apply(
            Some(&forced),
            cm(json!({"key": "1", "other": "x"})),
            "a",
            false,
        ));
        assert_eq!(
            c.message(),
            "Apply failed with 1 conflict: conflict with \"b\": .data.key"
        );
        Ok(())
    }

    #[test]
    fn several_conflicts_are_listed_per_manager() {
        let a = do_apply(None, cm(json!({"k1": "1", "k2": "2"})), "a", false);
        let c = conflicts(
            a.and_then(|a| do_apply(Some(&a), cm(json!({"k1": "x", "k2": "y"})), "b", false)),
        );
        assert_eq!(
            c.message(),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .data.k1\n- .data.k2"
        );
    }

    #[test]
    fn fields_no_longer_applied_are_removed_unless_shared() -> Result<(), ApplyError> {
        let a = do_apply(None, cm(json!({"a": "1", "b": "2", "c": "3"})), "a", false)?;
        let shared = do_apply(Some(&a), cm(json!({"c": "3"})), "other", false)?;
        let out = do_apply(Some(&shared), cm(json!({"a": "1"})), "a", false)?;
        assert_eq!(out["data"], json!({"a": "1", "c": "3"}));
        assert_eq!(fields_of(&out, "a"), json!({"f:data": {"f:a": {}}}));
        // Dropping the whole map removes the emptied map too.
        let l = do_apply(
            None,
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","labels":{"x":"y"}}}),
            "a",
            false,
        )?;
        let out = do_apply(
            Some(&l),
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}),
            "a",
            false,
        )?;
        assert!(out["metadata"].get("labels").is_none(), "{out}");
        assert!(out["metadata"].get("managedFields").is_none(), "{out}");
        Ok(())
    }

    #[test]
    fn list_map_elements_are_merged_and_owned_per_element() -> Result<(), ApplyError> {
        let a = do_apply(
            None,
            deploy(1, json!([{"name": "app", "image": "app:1"}])),
            "a",
            false,
        )?;
        let b = do_apply(
            Some(&a),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}}}),
            "b",
            false,
        )?;
        let cs = &b["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            *cs,
            json!([{"name": "app", "image": "app:1"}, {"name": "sidecar", "image": "s:1"}])
        );
        assert_eq!(
            fields_of(&b, "b"),
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"sidecar\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        let c = conflicts(do_apply(
            Some(&b),
            deploy(1, json!([{"name": "sidecar", "image": "s:2"}])),
            "a",
            false,
        ));
        assert_eq!(c.0.len(), 1);
        assert_eq!(
            c.0[0].field,
            ".spec.template.spec.containers[name=\"sidecar\"].image"
        );
        // `a` stops applying its container: it is removed, b's stays.
        let d = do_apply(
            Some(&b),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1}}),
            "a",
            false,
        )?;
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "sidecar", "image": "s:1"}])
        );
        Ok(())
    }

    #[test]
    fn port_keys_use_defaults_and_sets_merge_by_value() -> Result<(), ApplyError> {
        let a = do_apply(
            None,
            deploy(
                1,
                json!([{"name": "app", "ports": [{"containerPort": 80}]}]),
            ),
            "a",
            false,
        )?;
        let f = fields_of(&a, "a");
        let ports =
            &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:ports"];
        assert!(
            ports
                .get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
                .is_some(),
            "{ports}"
        );
        let meta = |fin: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": fin}});
        let x = do_apply(None, meta(json!(["x"])), "x", false)?;
        let y = do_apply(Some(&x), meta(json!(["y"])), "y", false)?;
        assert_eq!(y["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(
            fields_of(&y, "y"),
            json!({"f:metadata": {"f:finalizers": {"v:\"y\"": {}}}})
        );
        Ok(())
    }

    #[test]
    fn atomic_lists_are_owned_whole() -> Result<(), ApplyError> {
        let tol = |t: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"tolerations": t}}}})
        };
        let a = do_apply(None, tol(json!([{"key": "a"}])), "a", false)?;
        assert_eq!(
            fields_of(&a, "a"),
            json!({"f:spec": {"f:template": {"f:spec": {"f:tolerations": {}}}}})
        );
        let c = conflicts(do_apply(Some(&a), tol(json!([{"key": "b"}])), "b", false));
        assert_eq!(c.0[0].field, ".spec.template.spec.tolerations");
        Ok(())
    }

    #[test]
    fn update_after_apply_makes_the_next_apply_conflict() -> Result<(), ApplyError> {
        let a = do_apply(
            None,
            deploy(1, json!([{"name": "app", "image": "app:1"}])),
            "other-mgr-apply",
            false,
        )?;
        let mut scaled = a.clone();
        scaled["spec"]["replicas"] = json!(3);
        let scaled = update(Some(&a), &scaled, "other-mgr", None, T2);
        assert_eq!(
            fields_of(&scaled, "other-mgr"),
            json!({"f:spec": {"f:replicas": {}}})
        );
        let applier = fields_of(&scaled, "other-mgr-apply");
        assert!(applier["f:spec"].get("f:replicas").is_none(), "{applier}");
        let c = conflicts(do_apply(
            Some(&scaled),
            deploy(1, json!([{"name": "app", "image": "app:1"}])),
            "other-mgr-apply",
            false,
        ));
        assert_eq!(
            c.message(),
            "Apply failed with 1 conflict: conflict with \"other-mgr\" using apps/v1: .spec.replicas"
        );
        // Applying the live value is fine.
        do_apply(
            Some(&scaled),
            deploy(3, json!([{"name": "app", "image": "app:1"}])),
            "other-mgr-apply",
            false,
        )?;
        Ok(())
    }

    #[test]
    fn track_update_create_noop_and_merge_entries() {
        let created = update(None, &cm(json!({"a": "1"})), "kubectl-create", None, T1);
        assert_eq!(
            created["metadata"]["managedFields"],
            json!([{"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1", "time": T1,
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}])
        );
        // No change: nothing recorded, time untouched.
        let same = update(Some(&created), &created, "someone", None, T2);
        assert_eq!(
            same["metadata"]["managedFields"],
            created["metadata"]["managedFields"]
        );
        // Same manager again: one entry, union of fields, new time.
        let mut next = created.clone();
        next["data"]["b"] = json!("2");
        let next = update(Some(&created), &next, "kubectl-create", None, T2);
        assert_eq!(
            managers(&next),
            [("kubectl-create".to_string(), "Update".to_string())]
        );
        assert_eq!(
            fields_of(&next, "kubectl-create"),
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        assert_eq!(next["metadata"]["managedFields"][0]["time"], T2);
        // Another manager takes what it changes; removals leave everyone.
        let mut other = next.clone();
        other["data"]["a"] = json!("9");
        other["data"].as_object_mut().map(|m| m.remove("b"));
        let other = update(Some(&next), &other, "editor", None, T2);
        assert_eq!(fields_of(&other, "editor"), json!({"f:data": {"f:a": {}}}));
        assert!(fields_of(&other, "kubectl-create").is_null());
    }

    #[test]
    fn metadata_bookkeeping_is_never_tracked() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "1", "generation": 1,
                         "creationTimestamp": T1, "labels": {"l": "v"}}});
        let out = update(None, &obj, "m", None, T1);
        assert_eq!(
            fields_of(&out, "m"),
            json!({"f:metadata": {"f:labels": {"f:l": {}}}})
        );
    }

    #[test]
    fn status_is_tracked_only_on_the_status_subresource() {
        let old = update(None, &deploy(1, json!([])), "creator", None, T1);
        let mut new = old.clone();
        new["status"] = json!({"replicas": 1});
        new["spec"]["replicas"] = json!(2);
        let main = update(Some(&old), &new, "main", None, T2);
        assert_eq!(
            fields_of(&main, "main"),
            json!({"f:spec": {"f:replicas": {}}})
        );
        let status = update(Some(&old), &new, "ctrl", Some("status"), T2);
        assert_eq!(
            fields_of(&status, "ctrl"),
            json!({"f:status": {"f:replicas": {}}})
        );
        let entry = status["metadata"]["managedFields"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["manager"] == "ctrl"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(entry["subresource"], "status");
    }

    #[test]
    fn status_apply_touches_only_status() -> Result<(), ApplyError> {
        let live = do_apply(None, deploy(1, json!([])), "a", false)?;
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 7}, "status": {"readyReplicas": 1}});
        let out = apply(
            Some(&live),
            &cfg,
            &deploy_keys(),
            &ApplyOptions {
                manager: "ctrl",
                force: false,
                subresource: Some("status"),
                has_status_subresource: true,
                now: T2,
            },
        )?;
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(out["status"], json!({"readyReplicas": 1}));
        assert_eq!(
            fields_of(&out, "ctrl"),
            json!({"f:status": {"f:readyReplicas": {}}})
        );
        // And the main resource ignores status.
        let out2 = do_apply(Some(&out), cfg, "b", true)?;
        assert_eq!(out2["status"], json!({"readyReplicas": 1}));
        assert_eq!(out2["spec"]["replicas"], 7);
        Ok(())
    }

    #[test]
    fn managed_fields_reset_and_replacement_by_request() {
        let created = update(None, &cm(json!({"a": "1"})), "m", None, T1);
        let mut reset = created.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        let out = update(Some(&created), &reset, "m", None, T2);
        assert!(out["metadata"].get("managedFields").is_none(), "{out}");
        let mut replaced = created.clone();
        replaced["metadata"]["managedFields"][0]["manager"] = json!("renamed");
        let out = update(Some(&created), &replaced, "m", None, T2);
        assert_eq!(
            managers(&out),
            [("renamed".to_string(), "Update".to_string())]
        );
    }

    #[test]
    fn client_side_apply_upgrades_to_server_side() -> Result<(), ApplyError> {
        let cfg = cm(json!({"key": "1"}));
        let mut csa = cfg.clone();
        csa["metadata"]["annotations"] = json!({LAST_APPLIED: cfg.to_string()});
        let live = update(None, &csa, "kubectl-client-side-apply", None, T1);
        let out = do_apply(Some(&live), cm(json!({"key": "2"})), "kubectl", false)?;
        assert_eq!(out["data"]["key"], "2");
        let ann = out["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap_or_default();
        let last: Value = serde_json::from_str(ann).unwrap_or_default();
        assert_eq!(last["data"]["key"], "2");
        // Other managers still conflict.
        let c = conflicts(do_apply(
            Some(&live),
            cm(json!({"key": "3"})),
            "not-kubectl",
            false,
        ));
        assert_eq!(
            c.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.key"
        );
        Ok(())
    }

    #[test]
    fn objects_without_managed_fields_belong_to_before_first_apply() {
        let live = cm(json!({"key": "1"}));
        let c = conflicts(do_apply(Some(&live), cm(json!({"key": "2"})), "a", false));
        assert_eq!(c.0[0].manager, "before-first-apply");
    }

    #[test]
    fn nulls_in_the_configuration_are_not_applied() -> Result<(), ApplyError> {
        let out = do_apply(None, cm(json!({"a": "1", "b": null})), "a", false)?;
        assert_eq!(out["data"], json!({"a": "1"}));
        assert_eq!(fields_of(&out, "a"), json!({"f:data": {"f:a": {}}}));
        Ok(())
    }

    #[test]
    fn invalid_configurations() {
        let invalid = |r: Result<Value, ApplyError>| matches!(r, Err(ApplyError::Invalid(_)));
        assert!(invalid(do_apply(
            None,
            json!({"kind": "ConfigMap"}),
            "a",
            false
        )));
        assert!(invalid(do_apply(
            None,
            json!({"apiVersion": "v1"}),
            "a",
            false
        )));
        assert!(invalid(do_apply(None, json!([1]), "a", false)));
        let mut with_mf = cm(json!({}));
        with_mf["metadata"]["managedFields"] = json!([{"manager": "x"}]);
        assert!(invalid(do_apply(None, with_mf, "a", false)));
        let dup = deploy(1, json!([{"name": "a"}, {"name": "a"}]));
        assert!(invalid(do_apply(None, dup, "a", false)));
    }

    #[test]
    fn noop_apply_keeps_time_and_atomic_maps_are_leaves() -> Result<(), ApplyError> {
        let a = do_apply(None, cm(json!({"k": "v"})), "a", false)?;
        let again = apply(
            Some(&a),
            &cm(json!({"k": "v"})),
            &NoListKeys,
            &ApplyOptions {
                manager: "a",
                force: false,
                subresource: None,
                has_status_subresource: false,
                now: T2,
            },
        )?;
        assert_eq!(again["metadata"]["managedFields"][0]["time"], T1);
        let sel = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}}});
        let out = do_apply(None, sel, "a", false)?;
        assert_eq!(fields_of(&out, "a"), json!({"f:spec": {"f:selector": {}}}));
        Ok(())
    }

    #[test]
    fn update_managers_are_capped() {
        let mut obj = update(None, &cm(json!({})), "m0", None, T1);
        for i in 0..12 {
            let mut next = obj.clone();
            next["data"][format!("k{i}")] = json!("v");
            obj = update(
                Some(&obj),
                &next,
                &format!("m{i}"),
                None,
                &format!("2024-01-01T00:00:{i:02}Z"),
            );
        }
        let names = managers(&obj);
        assert_eq!(names.len(), 10, "{names:?}");
        assert!(names.iter().any(|(m, _)| m == ANCIENT_CHANGES));
    }
}
