//! [`ApiServer`]: one cluster's API, the semantics behind every verb.
//!
//! HTTP handlers ([`crate::http`]) and in-process callers (the simulated world's controllers) go
//! through the same methods here, so resourceVersions, `managedFields`, validation, garbage
//! collection and watch events are identical for both.
//!
//! All state sits behind one mutex per cluster, held only for in-memory work (never across an
//! `.await` or I/O). Watches take their starting point under the lock and then run lock-free on a
//! broadcast channel.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use crate::auth::{Authenticator, ServiceAccountLookup};
use crate::http::status::{ApiError, qualified};
use crate::patch::{self, ListKeys};
use crate::registry::{Registry, ResourceType, TypeKey, name_error};
use crate::schema::Cause;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ObjKey, Store};
use crate::watch::{self as w, Filter, WatchConfig, WatchEvent, WatchStart, WatchStream};

/// Configuration of one cluster's API server.
#[derive(Clone)]
pub struct ApiServerConfig {
    /// Cluster name (for logs).
    pub name: String,
    /// Watch history kept per resource type; older resourceVersions answer 410 Gone.
    pub watch_history: usize,
    /// Largest stored object (serialized JSON), like etcd's 1.5 MiB value limit.
    pub max_object_bytes: usize,
    /// Mints ServiceAccount tokens (TokenRequest, token Secrets).
    pub authenticator: Arc<Authenticator>,
}

/// Default watch history per type.
pub const DEFAULT_WATCH_HISTORY: usize = 1000;
/// Default object size limit: etcd's 1.5 MiB.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 1536 * 1024;
/// The request body limit (kube-apiserver: 3 MiB).
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// The finalizer kube-apiserver puts on CRDs to delete their objects first.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// Foreground cascading deletion finalizer.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Orphan deletion finalizer.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The namespace spec finalizer of the namespace controller.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Namespaces every cluster starts with.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// `fieldValidation` of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop unknown fields and report them in `Warning` headers (the server default).
    #[default]
    Warn,
    /// Reject unknown fields with 400.
    Strict,
}

/// Options of create/update/patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: run everything but do not store.
    pub dry_run: bool,
    /// `fieldManager`; defaults to the client's user agent (HTTP) or `kube-sim` (in-process).
    pub field_manager: Option<String>,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` for server-side apply.
    pub force: bool,
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete now; the garbage collector removes dependents afterwards.
    #[default]
    Background,
    /// Keep the owner (with `foregroundDeletion`) until blocking dependents are gone.
    Foreground,
    /// Remove the owner's references from dependents, keep them.
    Orphan,
}

/// Options of delete and deletecollection (`DeleteOptions`).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`.
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
}

/// Options of list (and the list part of watch).
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch` (`Exact` or `NotOlderThan`).
    pub resource_version_match: Option<String>,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
}

/// Options of watch.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Selectors and starting resourceVersion.
    pub list: ListOptions,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself.
    Main,
    /// `/status`.
    Status,
    /// `/scale`.
    Scale,
    /// `/finalize` (namespaces).
    Finalize,
}

impl Subresource {
    fn name(self) -> Option<&'static str> {
        match self {
            Subresource::Main => None,
            Subresource::Status => Some("status"),
            Subresource::Scale => Some("scale"),
            Subresource::Finalize => Some("finalize"),
        }
    }
}

/// Patch types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml`.
    Apply,
}

/// A resolved resource type and the version a request uses.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource type.
    pub rt: Arc<ResourceType>,
    /// The requested version.
    pub version: String,
}

impl Target {
    /// `apiVersion` of objects served through this target.
    pub fn api_version(&self) -> String {
        self.rt.api_version(&self.version)
    }
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The object as stored (or as it would be, for dry runs).
    pub object: Value,
    /// `Warning` header values.
    pub warnings: Vec<String>,
    /// Whether the object was created (201) rather than updated (200).
    pub created: bool,
}

/// The result of a delete.
#[derive(Debug, Clone)]
pub struct DeleteOutcome {
    /// The object's last state.
    pub object: Value,
    /// Whether the object is gone (`false`: finalizers or a grace period keep it for now).
    pub deleted: bool,
}

pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    /// Next host number tried for Service cluster IPs (10.96.0.0/12).
    next_service_ip: u32,
}

impl State {
    /// The next free Service cluster IP in 10.96.0.0/12 (10.96.0.1 is the `kubernetes`
    /// Service's).
    fn allocate_service_ip(&mut self) -> String {
        let key = TypeKey {
            group: String::new(),
            resource: "services".into(),
        };
        let used: std::collections::HashSet<String> = self
            .store
            .type_store(&key)
            .map(|ts| {
                ts.objects()
                    .values()
                    .filter_map(|s| s["spec"]["clusterIP"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        loop {
            let n = self.next_service_ip;
            self.next_service_ip = if n >= (1 << 20) - 2 { 10 } else { n + 1 };
            let ip = format!("10.{}.{}.{}", 96 + (n >> 16), (n >> 8) & 0xff, n & 0xff);
            if !used.contains(&ip) || used.len() >= (1 << 20) - 12 {
                return ip;
            }
        }
    }
}

/// One cluster's Kubernetes API.
pub struct ApiServer {
    name: String,
    max_object_bytes: usize,
    authenticator: Arc<Authenticator>,
    state: Mutex<State>,
    /// Wakes the background controllers after writes.
    wake: Arc<Notify>,
    /// `true` once shut down: ends watches and background tasks.
    shutdown: watch::Sender<bool>,
    ca_pem: Mutex<Option<String>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

impl ServiceAccountLookup for ApiServer {
    fn service_account_uid(&self, namespace: &str, name: &str) -> Option<String> {
        ApiServer::service_account_uid(self, namespace, name)
    }
}

/// Current time as kube-apiserver writes it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, list: &[String]) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert("finalizers".into(), json!(list));
        }
    }
}

/// `metadata` as a map, created if missing (`None` only if `obj` is not an object).
fn meta_obj(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
}

fn set_meta(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = meta_obj(obj) {
        m.insert(key.to_owned(), value);
    }
}

fn remove_meta(obj: &mut Value, key: &str) {
    if let Some(m) = meta_obj(obj) {
        m.remove(key);
    }
}

fn random_suffix() -> String {
    // kube's generateName alphabet (no vowels, no confusable characters).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Everything but `metadata` (and `status` for types with a status subresource): what bumps
/// `metadata.generation`.
fn spec_part(obj: &Value, has_status: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if has_status {
            m.remove("status");
        }
    }
    o
}

/// The object without server-maintained volatile fields, to detect no-op writes.
fn comparable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        // Ownership changes are changes; a refreshed timestamp alone is not (kube 1.28+ keeps
        // the old managedFields when nothing else changed).
        if let Some(entries) = m.get_mut("managedFields").and_then(Value::as_array_mut) {
            for e in entries {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
    }
    o
}

fn label_value_error(v: &str) -> Option<String> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    (!ok).then(|| "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_owned())
}

fn qualified_name_error(k: &str) -> Option<String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || name_error(crate::registry::NameRule::Subdomain, p).is_some())
    {
        return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
    }
    if name.is_empty() || label_value_error(name).is_some() {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    None
}

fn cause(field: &str, reason: &str, message: String) -> Cause {
    Cause {
        reason: reason.to_owned(),
        message,
        field: field.to_owned(),
    }
}

/// Validation shared by every object's metadata (labels, annotations, owner references).
fn validate_metadata(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = &obj["metadata"];
    if let Some(labels) = meta.get("labels").filter(|l| !l.is_null()) {
        match labels.as_object() {
            Some(map) => {
                for (k, v) in map {
                    if let Some(e) = qualified_name_error(k) {
                        causes.push(cause(
                            "metadata.labels",
                            "FieldValueInvalid",
                            format!("Invalid value: {k:?}: {e}"),
                        ));
                    }
                    match v.as_str() {
                        Some(s) => {
                            if let Some(e) = label_value_error(s) {
                                causes.push(cause(
                                    "metadata.labels",
                                    "FieldValueInvalid",
                                    format!("Invalid value: {s:?}: {e}"),
                                ));
                            }
                        }
                        None => causes.push(cause(
                            &format!("metadata.labels.{k}"),
                            "FieldValueTypeMismatch",
                            "Invalid value: must be a string".into(),
                        )),
                    }
                }
            }
            None => causes.push(cause(
                "metadata.labels",
                "FieldValueTypeMismatch",
                "Invalid value: must be an object".into(),
            )),
        }
    }
    if let Some(ann) = meta.get("annotations").filter(|a| !a.is_null()) {
        match ann.as_object() {
            Some(map) => {
                let mut total = 0;
                for (k, v) in map {
                    total += k.len() + v.as_str().map_or(0, str::len);
                    if let Some(e) = qualified_name_error(k) {
                        causes.push(cause(
                            "metadata.annotations",
                            "FieldValueInvalid",
                            format!("Invalid value: {k:?}: {e}"),
                        ));
                    }
                    if !v.is_string() {
                        causes.push(cause(
                            &format!("metadata.annotations.{k}"),
                            "FieldValueTypeMismatch",
                            "Invalid value: must be a string".into(),
                        ));
                    }
                }
                if total > 256 * 1024 {
                    causes.push(cause(
                        "metadata.annotations",
                        "FieldValueTooLong",
                        "Too long: must have at most 262144 bytes".into(),
                    ));
                }
            }
            None => causes.push(cause(
                "metadata.annotations",
                "FieldValueTypeMismatch",
                "Invalid value: must be an object".into(),
            )),
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array) {
        // apimachinery's validateOwnerReference: paths carry no list index, and an empty
        // field is "Invalid" with a message per field, not "Required".
        for r in refs {
            for (f, what) in [
                ("apiVersion", "version"),
                ("kind", "kind"),
                ("name", "name"),
                ("uid", "uid"),
            ] {
                let value = r[f].as_str().unwrap_or_default();
                if value.is_empty() {
                    causes.push(cause(
                        &format!("metadata.ownerReferences.{f}"),
                        "FieldValueInvalid",
                        format!("Invalid value: {value:?}: {what} must not be empty"),
                    ));
                }
            }
        }
    }
    if let Some(f) = meta.get("finalizers").filter(|f| !f.is_null()) {
        match f.as_array().filter(|a| a.iter().all(Value::is_string)) {
            None => causes.push(cause(
                "metadata.finalizers",
                "FieldValueTypeMismatch",
                "Invalid value: must be a list of strings".into(),
            )),
            // apimachinery's ValidateFinalizerName: each finalizer is a qualified name; the
            // path carries no list index.
            Some(names) => {
                for name in names.iter().filter_map(Value::as_str) {
                    if let Some(msg) = qualified_name_error(name) {
                        causes.push(cause(
                            "metadata.finalizers",
                            "FieldValueInvalid",
                            format!("Invalid value: {name:?}: {msg}"),
                        ));
                    }
                }
            }
        }
    }
    causes
}

/// Reads a JSON path like `.spec.replicas` (dot-separated fields only).
pub fn get_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        cur = cur.get(part)?;
    }
    Some(cur)
}

fn set_path(obj: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
        .collect();
    let mut cur = obj;
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        cur = map.entry((*part).to_owned()).or_insert_with(|| json!({}));
    }
}

/// `key=value,...` of a label selector object (`matchLabels` and simple `matchExpressions`).
pub fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = sel["matchExpressions"].as_array() {
        for e in exprs {
            let key = e["key"].as_str().unwrap_or_default();
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => parts.push(format!("{key} in ({})", vals.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", vals.join(","))),
                "Exists" => parts.push(key.to_owned()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, last: &ObjKey) -> String {
    use base64::Engine as _;
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        // The NUL sorts right after `last`, like kube-apiserver's keys.
        start: format!("{}/{}\u{0}", last.0, last.1),
    };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<(u64, ObjKey), ApiError> {
    use base64::Engine as _;
    let bad = || {
        ApiError::BadRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into())
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(token))
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = t.start.trim_end_matches('\u{0}');
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    Ok((t.rv, (ns.to_owned(), name.to_owned())))
}

const EXPIRED_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse::<u64>()
        .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv}")))
}

/// How a write is made (for managedFields and validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Update,
    Apply,
}

impl ApiServer {
    /// Creates a cluster's API server with the built-in types and the initial namespaces, and
    /// starts its background controllers if called inside a Tokio runtime (otherwise call
    /// [`ApiServer::start`] later).
    pub fn new(config: ApiServerConfig) -> Arc<Self> {
        let registry = Registry::with_builtins();
        let mut store = Store::new(config.watch_history);
        for t in registry.all() {
            store.ensure_type(&t.key());
        }
        // core/v1 and events.k8s.io/v1 Events are one resource served by two groups.
        let core_events = TypeKey {
            group: String::new(),
            resource: "events".into(),
        };
        let new_events = TypeKey {
            group: "events.k8s.io".into(),
            resource: "events".into(),
        };
        store.add_mirror(
            core_events.clone(),
            new_events.clone(),
            crate::registry::core_event_to_events_v1,
        );
        store.add_mirror(
            new_events,
            core_events,
            crate::registry::events_v1_to_core_event,
        );
        let (shutdown, _) = watch::channel(false);
        let api = Arc::new(ApiServer {
            name: config.name,
            max_object_bytes: config.max_object_bytes,
            authenticator: config.authenticator,
            state: Mutex::new(State {
                store,
                registry,
                next_service_ip: 10,
            }),
            wake: Arc::new(Notify::new()),
            shutdown,
            ca_pem: Mutex::new(None),
        });
        let lookup: Arc<dyn ServiceAccountLookup> = api.clone();
        api.authenticator
            .bind_service_accounts(Arc::downgrade(&lookup));
        {
            let mut st = api.lock();
            for ns in INITIAL_NAMESPACES {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                if let Ok(t) = api.target_in(&st, "", "v1", "namespaces") {
                    let _ = api.create_locked(
                        &mut st,
                        &t,
                        None,
                        obj,
                        &WriteOptions::default(),
                        "kube-apiserver",
                    );
                }
            }
            // The `kubernetes` Service every cluster has (its endpoints are not simulated).
            if let Ok(t) = api.target_in(&st, "", "v1", "services") {
                let svc = json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}});
                let _ = api.create_locked(
                    &mut st,
                    &t,
                    None,
                    svc,
                    &WriteOptions::default(),
                    "kube-apiserver",
                );
            }
            api.reconcile_locked(&mut st);
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            api.start();
        }
        api
    }

    /// Starts the background controllers (garbage collector, namespace and CRD finalizers,
    /// ServiceAccount and token controllers). They hold only a weak reference and stop on
    /// [`ApiServer::shutdown`] or when the server is dropped. Idempotent only in effect: each call
    /// starts one more task.
    pub fn start(self: &Arc<Self>) {
        let weak: Weak<ApiServer> = Arc::downgrade(self);
        let wake = self.wake.clone();
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            let mut last_epoch = None;
            loop {
                let periodic = tokio::select! {
                    _ = wake.notified() => false,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => true,
                    _ = shutdown.changed() => false,
                };
                if *shutdown.borrow() {
                    break;
                }
                let Some(api) = weak.upgrade() else { break };
                {
                    let mut st = api.lock();
                    // Writes that no controller cares about (most of them) cost nothing; the
                    // periodic pass handles grace periods running out.
                    if periodic || last_epoch != Some(st.store.controller_epoch()) {
                        api.reconcile_locked(&mut st);
                        last_epoch = Some(st.store.controller_epoch());
                    }
                }
                drop(api);
            }
        });
    }

    /// Stops background tasks and ends every open watch.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
        self.wake.notify_waiters();
    }

    /// A receiver that turns `true` on shutdown (for servers built around this API).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The authenticator of this cluster.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.authenticator
    }

    /// Sets the cluster CA (PEM) published in token Secrets and `kube-root-ca.crt` ConfigMaps.
    pub fn set_ca_pem(&self, pem: impl Into<String>) {
        *self.ca_pem.lock().unwrap_or_else(|p| p.into_inner()) = Some(pem.into());
        self.wake.notify_one();
    }

    pub(crate) fn ca_pem(&self) -> Option<String> {
        self.ca_pem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The uid of the ServiceAccount `ns/name`, if it exists.
    pub fn service_account_uid(&self, ns: &str, name: &str) -> Option<String> {
        let st = self.lock();
        let key = TypeKey {
            group: String::new(),
            resource: "serviceaccounts".into(),
        };
        st.store
            .get(&key, ns, name)
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
    }

    /// The current resourceVersion of the cluster.
    pub fn resource_version(&self) -> u64 {
        self.lock().store.current_rv()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic mid-update; the data is still structurally valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn notify(&self) {
        self.wake.notify_one();
    }

    /// A snapshot of the registry (discovery, OpenAPI).
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    // ----- resolving -----

    fn target_in(
        &self,
        st: &State,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Result<Target, ApiError> {
        let rt = st
            .registry
            .by_resource(group, version, resource)
            .ok_or(ApiError::NoRoute)?;
        Ok(Target {
            rt,
            version: version.to_owned(),
        })
    }

    /// Resolves `group/version/resource` (plural).
    pub fn resolve_resource(
        &self,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Result<Target, ApiError> {
        let st = self.lock();
        self.target_in(&st, group, version, resource)
    }

    /// Resolves `apiVersion` + `kind`.
    pub fn resolve_kind(&self, api_version: &str, kind: &str) -> Result<Target, ApiError> {
        let (group, version) = split_api_version(api_version);
        let st = self.lock();
        let rt = st
            .registry
            .by_kind(group, version, kind)
            .ok_or_else(|| ApiError::NotFound {
                group: group.to_owned(),
                resource: kind.to_owned(),
                name: String::new(),
            })?;
        Ok(Target {
            rt,
            version: version.to_owned(),
        })
    }

    fn refresh(&self, st: &State, t: &Target) -> Result<Target, ApiError> {
        // The type may have changed (CRD update) or vanished since resolution.
        self.target_in(st, &t.rt.group, &t.version, &t.rt.plural)
    }

    fn not_found(t: &Target, name: &str) -> ApiError {
        ApiError::NotFound {
            group: t.rt.group.clone(),
            resource: t.rt.plural.clone(),
            name: name.to_owned(),
        }
    }

    fn ns_of<'a>(t: &Target, ns: Option<&'a str>) -> Result<&'a str, ApiError> {
        if t.rt.namespaced {
            match ns {
                Some(n) if !n.is_empty() => Ok(n),
                _ => Err(ApiError::BadRequest(
                    "the server could not find the requested resource: a namespace is required"
                        .into(),
                )),
            }
        } else {
            Ok("")
        }
    }

    fn list_keys(t: &Target) -> Box<dyn ListKeys> {
        match t.rt.schema(&t.version) {
            Some(schema) => schema_list_keys(schema),
            None => Box::new(patch::builtin_list_keys(&t.rt.group, &t.rt.kind)),
        }
    }

    // ----- reads -----

    /// Gets one object.
    pub fn get(&self, t: &Target, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        let t = self.refresh(&st, t)?;
        let ns = Self::ns_of(&t, ns)?;
        let obj = st
            .store
            .get(&t.rt.key(), ns, name)
            .ok_or_else(|| Self::not_found(&t, name))?;
        Ok(w::with_api_version(&obj, &t.api_version()))
    }

    /// Lists objects (`ns: None` lists across namespaces).
    pub fn list(
        &self,
        t: &Target,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let filter = make_filter(t, ns, opts)?;
        let st = self.lock();
        let t = self.refresh(&st, t)?;
        let (items, rv, cont, remaining) = self.list_locked(&st, &t, &filter, opts)?;
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        if let Some(r) = remaining {
            meta["remainingItemCount"] = json!(r);
        }
        let api_version = t.api_version();
        let items: Vec<Value> = items
            .iter()
            .map(|o| w::with_api_version(o, &api_version))
            .collect();
        Ok(
            json!({"kind": t.rt.list_kind, "apiVersion": api_version, "metadata": meta, "items": items}),
        )
    }

    #[allow(clippy::type_complexity)]
    fn list_locked(
        &self,
        st: &State,
        t: &Target,
        filter: &Filter,
        opts: &ListOptions,
    ) -> Result<(Vec<Arc<Value>>, u64, Option<String>, Option<usize>), ApiError> {
        let key = t.rt.key();
        let ts = st
            .store
            .type_store(&key)
            .ok_or_else(|| Self::not_found(t, ""))?;
        let current = st.store.current_rv();
        let rv_param = opts.resource_version.as_deref().unwrap_or("");
        let mut after: Option<ObjKey> = None;
        let (snapshot, list_rv) = if let Some(token) =
            opts.continue_token.as_deref().filter(|c| !c.is_empty())
        {
            if !rv_param.is_empty() && rv_param != "0" {
                return Err(ApiError::BadRequest(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            let (rv, start) = decode_continue(token)?;
            after = Some(start);
            if ts.changed_after(rv) {
                (
                    ts.snapshot_at(rv)
                        .map_err(|_| ApiError::Expired(EXPIRED_CONTINUE.into()))?,
                    rv,
                )
            } else {
                (ts.clone_objects(filter.namespace.as_deref()), rv)
            }
        } else {
            match (
                rv_param,
                opts.resource_version_match.as_deref().unwrap_or(""),
            ) {
                ("", "") | ("0", "") | ("0", "NotOlderThan") => {
                    (ts.clone_objects(filter.namespace.as_deref()), current)
                }
                ("", m) => {
                    return Err(ApiError::BadRequest(format!(
                        "resourceVersionMatch {m:?} is forbidden unless resourceVersion is provided"
                    )));
                }
                ("0", "Exact") => {
                    return Err(ApiError::BadRequest(
                        "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\""
                            .into(),
                    ));
                }
                (rv, "Exact") => {
                    let rv = parse_rv(rv)?;
                    if rv > current {
                        return Err(ApiError::Timeout(format!(
                            "Too large resource version: {rv}, current: {current}"
                        )));
                    }
                    let snap = ts.snapshot_at(rv).map_err(|_| {
                        ApiError::Expired(format!("too old resource version: {rv} ({current})"))
                    })?;
                    (snap, rv)
                }
                (rv, "" | "NotOlderThan") => {
                    let rv = parse_rv(rv)?;
                    if rv > current {
                        return Err(ApiError::Timeout(format!(
                            "Too large resource version: {rv}, current: {current}"
                        )));
                    }
                    (ts.clone_objects(filter.namespace.as_deref()), current)
                }
                (_, m) => {
                    return Err(ApiError::BadRequest(format!(
                        "unsupported resourceVersionMatch: {m:?}"
                    )));
                }
            }
        };
        let limit = opts.limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        let mut last: Option<ObjKey> = None;
        let mut remaining = 0usize;
        let mut more = false;
        let range = match &after {
            Some(a) => snapshot.range((
                std::ops::Bound::Excluded(a.clone()),
                std::ops::Bound::Unbounded,
            )),
            None => snapshot.range::<ObjKey, _>(..),
        };
        for (k, obj) in range {
            if let Some(ns) = &filter.namespace
                && &k.0 != ns
            {
                continue;
            }
            if !filter.matches(obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = true;
                remaining += 1;
                if filter.has_selectors() {
                    break;
                }
                continue;
            }
            last = Some(k.clone());
            items.push(obj.clone());
        }
        let cont = match (more, last) {
            (true, Some(l)) => Some(encode_continue(list_rv, &l)),
            _ => None,
        };
        let remaining = (more && !filter.has_selectors()).then_some(remaining);
        Ok((items, list_rv, cont, remaining))
    }

    /// Starts a watch.
    pub fn watch(
        &self,
        t: &Target,
        ns: Option<&str>,
        opts: &WatchOptions,
    ) -> Result<WatchStream, ApiError> {
        let filter = make_filter(t, ns, &opts.list)?;
        let st = self.lock();
        let t = self.refresh(&st, t)?;
        let key = t.rt.key();
        let current = st.store.current_rv();
        let api_version = t.api_version();
        let config = WatchConfig {
            filter: filter.clone(),
            api_version: api_version.clone(),
            kind: t.rt.kind.clone(),
            bookmarks: opts.allow_bookmarks,
            timeout: opts.timeout,
        };
        let rv_param = opts.list.resource_version.as_deref().unwrap_or("");
        if opts.send_initial_events == Some(true) {
            let mut causes = Vec::new();
            if opts.list.resource_version_match.as_deref() != Some("NotOlderThan") {
                causes.push(cause(
                    "resourceVersionMatch",
                    "FieldValueInvalid",
                    "Invalid value: must be set to NotOlderThan when sendInitialEvents is true"
                        .into(),
                ));
            }
            if !opts.allow_bookmarks {
                causes.push(cause("allowWatchBookmarks", "FieldValueForbidden", "Forbidden: allowWatchBookmarks must be set to true when sendInitialEvents is true".into()));
            }
            if !causes.is_empty() {
                return Err(ApiError::Invalid {
                    group: "meta.k8s.io".into(),
                    kind: "ListOptions".into(),
                    name: String::new(),
                    causes,
                });
            }
        }
        let initial_state =
            rv_param.is_empty() || rv_param == "0" || opts.send_initial_events == Some(true);
        let initial_state = initial_state && opts.send_initial_events != Some(false);
        let start = if initial_state {
            if !rv_param.is_empty() {
                let rv = parse_rv(rv_param)?;
                if rv > current {
                    return Err(ApiError::Timeout(format!(
                        "Too large resource version: {rv}, current: {current}"
                    )));
                }
            }
            let ts = st
                .store
                .type_store(&key)
                .ok_or_else(|| Self::not_found(&t, ""))?;
            let mut initial: Vec<WatchEvent> = ts
                .objects_in(filter.namespace.as_deref())
                .map(|(_, o)| o)
                .filter(|o| filter.matches(o))
                .map(|o| WatchEvent {
                    kind: "ADDED".into(),
                    object: w::with_api_version(o, &api_version),
                })
                .collect();
            if opts.send_initial_events == Some(true) && opts.allow_bookmarks {
                initial.push(w::initial_events_end(&config, current));
            }
            let (backlog, rx) = st
                .store
                .subscribe(&key, current)
                .map_err(|_| Self::not_found(&t, ""))?;
            WatchStart {
                initial,
                backlog,
                rx: Some(rx),
                start_rv: current,
            }
        } else {
            let rv = if rv_param.is_empty() {
                current
            } else {
                parse_rv(rv_param)?
            };
            match st.store.subscribe(&key, rv) {
                Ok((backlog, rx)) => WatchStart {
                    initial: Vec::new(),
                    backlog,
                    rx: Some(rx),
                    start_rv: rv,
                },
                Err(too_old) => {
                    let err = ApiError::Expired(format!(
                        "too old resource version: {rv} ({})",
                        too_old.oldest
                    ));
                    WatchStart {
                        initial: vec![WatchEvent::error(&err)],
                        backlog: Vec::new(),
                        rx: None,
                        start_rv: rv,
                    }
                }
            }
        };
        drop(st);
        Ok(w::stream(start, config, self.shutdown.subscribe()))
    }

    // ----- writes -----

    /// Creates an object (`ns` overrides `metadata.namespace` when given).
    pub fn create(
        &self,
        t: &Target,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, ApiError> {
        let mut st = self.lock();
        let t = self.refresh(&st, t)?;
        let manager = opts
            .field_manager
            .clone()
            .unwrap_or_else(|| "kube-sim".into());
        let out = self.create_locked(&mut st, &t, ns, obj, opts, &manager);
        drop(st);
        self.notify();
        out
    }

    fn check_body_type(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request was not a JSON object".into(),
            ));
        }
        let expected = t.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                obj["apiVersion"] = json!(expected);
            }
            Some(v) if v == expected => {}
            Some(v) => {
                return Err(ApiError::BadRequest(format!(
                    "the API version in the data ({v}) does not match the expected API version ({expected})"
                )));
            }
        }
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                obj["kind"] = json!(t.rt.kind);
            }
            Some(k) if k == t.rt.kind => {}
            Some(k) => {
                return Err(ApiError::BadRequest(format!(
                    "{k} in version \"{}\" cannot be handled as a {}: the kind in the data ({k}) does not match the expected kind ({})",
                    t.version, t.rt.kind, t.rt.kind
                )));
            }
        }
        if obj
            .get("metadata")
            .is_some_and(|m| !m.is_object() && !m.is_null())
        {
            return Err(ApiError::BadRequest(format!(
                "{} in version \"{}\" cannot be handled as a {}: metadata must be an object",
                t.rt.kind, t.version, t.rt.kind
            )));
        }
        Ok(())
    }

    fn check_namespace(t: &Target, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
        if t.rt.namespaced {
            let body_ns = meta_str(obj, "namespace").to_owned();
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::BadRequest("the namespace of the provided object does not match the namespace sent on the request".into()));
            }
            set_meta(obj, "namespace", json!(ns));
        } else {
            remove_meta(obj, "namespace");
        }
        Ok(())
    }

    pub(crate) fn create_locked(
        &self,
        st: &mut State,
        t: &Target,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
        manager: &str,
    ) -> Result<WriteOutcome, ApiError> {
        self.create_locked_as(st, t, ns, obj, opts, manager, Op::Create)
    }

    #[allow(clippy::too_many_arguments)]
    fn create_locked_as(
        &self,
        st: &mut State,
        t: &Target,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        manager: &str,
        op: Op,
    ) -> Result<WriteOutcome, ApiError> {
        Self::check_body_type(t, &mut obj)?;
        if !t.rt.verbs.iter().any(|v| v == "create") {
            return Err(ApiError::MethodNotAllowed(format!(
                "create is not supported on resources of kind \"{}\"",
                qualified(&t.rt.group, &t.rt.plural)
            )));
        }
        let ns = match ns {
            Some(n) => n.to_owned(),
            None => meta_str(&obj, "namespace").to_owned(),
        };
        let ns = if t.rt.namespaced {
            if ns.is_empty() {
                return Err(ApiError::BadRequest(
                    "the namespace of the object must be set".into(),
                ));
            }
            ns
        } else {
            String::new()
        };
        Self::check_namespace(t, &mut obj, &ns)?;
        self.check_namespace_open(st, t, &ns)?;
        if self.crd_terminating(st, t) {
            return Err(ApiError::MethodNotAllowed(
                "create not allowed while custom resource definition is terminating".to_owned(),
            ));
        }
        if !meta_str(&obj, "resourceVersion").is_empty() {
            return Err(ApiError::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        // Names: generateName gets a random suffix, as kube-apiserver's names.SimpleNameGenerator.
        if meta_str(&obj, "name").is_empty() {
            let prefix = meta_str(&obj, "generateName").to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &t.rt.group,
                    &t.rt.kind,
                    "",
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required".into(),
                ));
            }
            let prefix: String = prefix.chars().take(58).collect();
            set_meta(
                &mut obj,
                "name",
                json!(format!("{prefix}{}", random_suffix())),
            );
        }
        let name = meta_str(&obj, "name").to_owned();
        let key = t.rt.key();
        if st.store.get(&key, &ns, &name).is_some() {
            return Err(ApiError::AlreadyExists {
                group: t.rt.group.clone(),
                resource: t.rt.plural.clone(),
                name,
            });
        }
        let now = now_rfc3339();
        if let Some(m) = meta_obj(&mut obj) {
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now));
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            if t.rt.status || t.rt.is_custom() {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        if t.rt.reset_status_on_create
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        self.builtin_defaults(st, t, &mut obj, None);
        let (obj, warnings) =
            self.admit(st, t, None, obj, Subresource::Main, op, opts, manager, &now)?;
        let stored = if opts.dry_run {
            obj
        } else {
            let stored = st.store.put(&key, obj);
            self.after_commit(st, t, &stored);
            (*stored).clone()
        };
        Ok(WriteOutcome {
            object: w::with_api_version(&stored, &t.api_version()),
            warnings,
            created: true,
        })
    }

    fn check_namespace_open(&self, st: &State, t: &Target, ns: &str) -> Result<(), ApiError> {
        if !t.rt.namespaced {
            return Ok(());
        }
        let key = TypeKey {
            group: String::new(),
            resource: "namespaces".into(),
        };
        match st.store.get(&key, "", ns) {
            None => Err(ApiError::NotFound {
                group: String::new(),
                resource: "namespaces".into(),
                name: ns.to_owned(),
            }),
            Some(n) if !meta_str(&n, "deletionTimestamp").is_empty() => Err(ApiError::Forbidden {
                group: t.rt.group.clone(),
                resource: t.rt.plural.clone(),
                name: String::new(),
                message: format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    qualified(&t.rt.group, &t.rt.plural)
                ),
            }),
            Some(_) => Ok(()),
        }
    }

    fn crd_terminating(&self, st: &State, t: &Target) -> bool {
        if !t.rt.is_custom() {
            return false;
        }
        let key = TypeKey {
            group: "apiextensions.k8s.io".into(),
            resource: "customresourcedefinitions".into(),
        };
        st.store
            .get(&key, "", &format!("{}.{}", t.rt.plural, t.rt.group))
            .is_some_and(|c| !meta_str(&c, "deletionTimestamp").is_empty())
    }

    /// Type-specific defaults kube-apiserver applies (only what clients rely on).
    fn builtin_defaults(&self, st: &mut State, t: &Target, obj: &mut Value, old: Option<&Value>) {
        match (t.rt.group.as_str(), t.rt.plural.as_str()) {
            ("", "namespaces") => {
                if old.is_none() {
                    if obj["spec"]["finalizers"].is_null() {
                        obj["spec"] = json!({"finalizers": [NAMESPACE_FINALIZER]});
                    }
                    obj["status"] = json!({"phase": "Active"});
                }
                // The name label every namespace carries (kube 1.21+).
                let name = meta_str(obj, "name").to_owned();
                if let Some(m) = meta_obj(obj) {
                    let labels = m.entry("labels").or_insert_with(|| json!({}));
                    if labels.is_object() {
                        labels["kubernetes.io/metadata.name"] = json!(name);
                    }
                }
            }
            ("", "pods") => {
                if old.is_none() {
                    obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
                crate::defaults::pod_spec(&mut obj["spec"]);
            }
            ("", "secrets") => {
                if obj["type"].is_null() {
                    obj["type"] = json!("Opaque");
                }
                // stringData is write-only: merged into data (base64), as kube-apiserver does.
                if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
                    && let Some(sd) = sd.as_object()
                {
                    use base64::Engine as _;
                    if !obj["data"].is_object() {
                        obj["data"] = json!({});
                    }
                    for (k, v) in sd {
                        let encoded = base64::engine::general_purpose::STANDARD
                            .encode(v.as_str().unwrap_or_default());
                        obj["data"][k] = json!(encoded);
                    }
                }
            }
            ("", "services") => {
                if old.is_none() {
                    obj["status"] = json!({"loadBalancer": {}});
                }
                let mut allocate = || st.allocate_service_ip();
                crate::defaults::service(obj, old, &mut allocate);
            }
            ("apps", resource) => crate::defaults::workload(resource, obj),
            ("apiextensions.k8s.io", "customresourcedefinitions") if old.is_none() => {
                let mut fins = finalizers(obj);
                if !fins.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                    fins.push(CRD_CLEANUP_FINALIZER.into());
                }
                set_finalizers(obj, &fins);
            }
            _ => {}
        }
    }

    /// Validation, schema handling, managedFields and size checks shared by all writes.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        st: &State,
        t: &Target,
        old: Option<&Value>,
        mut obj: Value,
        sub: Subresource,
        op: Op,
        opts: &WriteOptions,
        manager: &str,
        now: &str,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let name = meta_str(&obj, "name").to_owned();
        let mut warnings = Vec::new();
        if old.is_none()
            && let Some(e) = name_error(t.rt.name_rule, &name)
        {
            return Err(ApiError::invalid(
                &t.rt.group,
                &t.rt.kind,
                &name,
                "metadata.name",
                "FieldValueInvalid",
                format!("Invalid value: {name:?}: {e}"),
            ));
        }
        let mut causes = validate_metadata(&obj);
        if let Some(schema) = t.rt.schema(&t.version).filter(|s| !s.is_null()) {
            let pruned = crate::schema::prune(&mut obj, schema);
            if !pruned.is_empty() {
                match opts.field_validation {
                    FieldValidation::Strict => {
                        let list: Vec<String> = pruned
                            .iter()
                            .map(|p| format!("unknown field \"{p}\""))
                            .collect();
                        return Err(ApiError::BadRequest(format!(
                            "strict decoding error: {}",
                            list.join(", ")
                        )));
                    }
                    FieldValidation::Warn => {
                        warnings.extend(pruned.iter().map(|p| format!("unknown field \"{p}\"")))
                    }
                    FieldValidation::Ignore => {}
                }
            }
            crate::schema::default(&mut obj, schema);
            causes.extend(crate::schema::validate(&obj, schema));
        } else if let Some(check) = t.rt.typed_check {
            let known = check(&obj).map_err(|e| {
                ApiError::BadRequest(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    t.rt.kind, t.version, t.rt.kind
                ))
            })?;
            // Like the real decoder, unknown fields of built-in types are dropped (and reported
            // per fieldValidation).
            let mut unknown = Vec::new();
            prune_unknown(&mut obj, &known, "", &mut unknown);
            match opts.field_validation {
                FieldValidation::Strict if !unknown.is_empty() => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|p| format!("unknown field \"{p}\""))
                        .collect();
                    return Err(ApiError::BadRequest(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|p| format!("unknown field \"{p}\"")))
                }
                _ => {}
            }
            causes.extend(builtin_validate(t, &obj, old));
        }
        if t.rt.group == "apiextensions.k8s.io" && t.rt.plural == "customresourcedefinitions" {
            causes.extend(self.validate_crd(st, &obj, old));
        }
        if let Some(old) = old {
            causes.extend(crate::defaults::immutable(
                &t.rt.group,
                &t.rt.plural,
                old,
                &obj,
            ));
            // No new finalizers once deletion started.
            if !meta_str(old, "deletionTimestamp").is_empty() {
                let before = finalizers(old);
                if finalizers(&obj).iter().any(|f| !before.contains(f)) {
                    causes.push(cause(
                        "metadata.finalizers",
                        "FieldValueForbidden",
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    ));
                }
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::Invalid {
                group: t.rt.group.clone(),
                kind: t.rt.kind.clone(),
                name,
                causes,
            });
        }
        let keys = Self::list_keys(t);
        if op != Op::Apply {
            obj = patch::track_update(
                old,
                &obj,
                keys.as_ref(),
                &patch::UpdateOptions {
                    manager,
                    subresource: sub.name(),
                    has_status_subresource: t.rt.status,
                    now,
                },
            );
        }
        // Store in the storage version (conversion None: only apiVersion changes).
        obj["apiVersion"] = json!(t.rt.api_version(&t.rt.storage_version));
        let size = serde_json::to_vec(&obj).map(|v| v.len()).unwrap_or(0);
        if size > self.max_object_bytes {
            return Err(ApiError::RequestEntityTooLarge(format!(
                "Request entity too large: object is {size} bytes, limit is {}",
                self.max_object_bytes
            )));
        }
        Ok((obj, warnings))
    }

    fn validate_crd(&self, st: &State, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        let name = meta_str(obj, "name");
        let group = obj["spec"]["group"].as_str().unwrap_or_default();
        let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
        if group.is_empty() {
            causes.push(cause(
                "spec.group",
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        if plural.is_empty() {
            causes.push(cause(
                "spec.names.plural",
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        if obj["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            causes.push(cause(
                "spec.names.kind",
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        if !matches!(
            obj["spec"]["scope"].as_str(),
            Some("Namespaced" | "Cluster")
        ) {
            causes.push(cause(
                "spec.scope",
                "FieldValueNotSupported",
                "Unsupported value: must be Namespaced or Cluster".into(),
            ));
        }
        if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
            causes.push(cause(
                "metadata.name",
                "FieldValueInvalid",
                format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
            ));
        }
        let versions = obj["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if versions.is_empty()
            || versions
                .iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .count()
                != 1
        {
            causes.push(cause(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version".into(),
            ));
        }
        if let Some(old) = old {
            if old["spec"]["group"] != obj["spec"]["group"] {
                causes.push(cause(
                    "spec.group",
                    "FieldValueInvalid",
                    "Invalid value: field is immutable".into(),
                ));
            }
            if old["spec"]["scope"] != obj["spec"]["scope"] {
                causes.push(cause(
                    "spec.scope",
                    "FieldValueInvalid",
                    "Invalid value: field is immutable".into(),
                ));
            }
        } else if st
            .registry
            .get(&TypeKey {
                group: group.to_owned(),
                resource: plural.to_owned(),
            })
            .is_some_and(|t| !t.is_custom())
        {
            causes.push(cause(
                "spec.names.plural",
                "FieldValueInvalid",
                "Invalid value: conflicts with a built-in resource".into(),
            ));
        }
        if causes.is_empty()
            && let Err(e) = crate::registry::crd_type(obj)
        {
            causes.push(cause("spec", "FieldValueInvalid", e));
        }
        causes
    }

    /// Side effects of a committed write on the registry (CRDs become served).
    fn after_commit(&self, st: &mut State, t: &Target, stored: &Arc<Value>) {
        if t.rt.group == "apiextensions.k8s.io" && t.rt.plural == "customresourcedefinitions" {
            self.establish_crd(st, stored);
        }
    }

    fn establish_crd(&self, st: &mut State, crd: &Value) {
        let Ok(rt) = crate::registry::crd_type(crd) else {
            return;
        };
        let key = rt.key();
        if st
            .registry
            .get(&key)
            .is_some_and(|old| old.crd.as_ref().map(|c| &c.uid) != rt.crd.as_ref().map(|c| &c.uid))
        {
            // A different CRD under the same name: start over.
            st.store.remove_type(&key);
        }
        st.store.ensure_type(&key);
        st.registry.insert(rt);
        // Status: accepted names and conditions, as the CRD controllers would set them.
        let names = crd["spec"]["names"].clone();
        let mut accepted = names.clone();
        if accepted["singular"].is_null() {
            accepted["singular"] = json!(names["kind"].as_str().unwrap_or_default().to_lowercase());
        }
        if accepted["listKind"].is_null() {
            accepted["listKind"] = json!(format!(
                "{}List",
                names["kind"].as_str().unwrap_or_default()
            ));
        }
        let now = now_rfc3339();
        let terminating = !meta_str(crd, "deletionTimestamp").is_empty();
        let old_status = &crd["status"];
        let cond = |ty: &str, status: &str, reason: &str, message: &str| {
            let previous = old_status["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
                .filter(|c| c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_owned));
            json!({"type": ty, "status": status, "lastTransitionTime": previous.unwrap_or_else(|| now.clone()), "reason": reason, "message": message})
        };
        let mut conditions = vec![
            cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            cond(
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
        ];
        if terminating {
            conditions.push(cond(
                "Terminating",
                "True",
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
            ));
        }
        let stored_versions: Vec<String> = {
            let mut v: Vec<String> = old_status["storedVersions"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(sv) = crd["spec"]["versions"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["storage"].as_bool() == Some(true)))
                .and_then(|v| v["name"].as_str())
                && !v.iter().any(|x| x == sv)
            {
                v.push(sv.to_owned());
            }
            v
        };
        let status = json!({"conditions": conditions, "acceptedNames": accepted, "storedVersions": stored_versions});
        if crd["status"] != status {
            let mut updated = crd.clone();
            updated["status"] = status;
            let crd_key = TypeKey {
                group: "apiextensions.k8s.io".into(),
                resource: "customresourcedefinitions".into(),
            };
            st.store.put(&crd_key, updated);
        }
    }

    /// Replaces an object (PUT), or its status/scale/finalize subresource.
    pub fn update(
        &self,
        t: &Target,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, ApiError> {
        let mut st = self.lock();
        let t = self.refresh(&st, t)?;
        let manager = opts
            .field_manager
            .clone()
            .unwrap_or_else(|| "kube-sim".into());
        let out = self.update_locked(&mut st, &t, ns, name, obj, sub, opts, &manager);
        drop(st);
        self.notify();
        out
    }

    /// Replaces the status of an object (the `/status` subresource).
    pub fn update_status(
        &self,
        t: &Target,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, ApiError> {
        self.update(t, ns, name, obj, Subresource::Status, opts)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_locked(
        &self,
        st: &mut State,
        t: &Target,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        sub: Subresource,
        opts: &WriteOptions,
        manager: &str,
    ) -> Result<WriteOutcome, ApiError> {
        let ns = Self::ns_of(t, ns)?;
        if sub == Subresource::Scale {
            return self.update_scale_locked(st, t, ns, name, obj, opts, manager);
        }
        Self::check_body_type(t, &mut obj)?;
        let body_name = meta_str(&obj, "name").to_owned();
        if body_name.is_empty() {
            set_meta(&mut obj, "name", json!(name));
        } else if body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        Self::check_namespace(t, &mut obj, ns)?;
        let key = t.rt.key();
        let Some(old) = st.store.get(&key, ns, name) else {
            if t.rt.create_on_update && sub == Subresource::Main {
                let ns = Some(ns).filter(|n| !n.is_empty());
                return self.create_locked(st, t, ns, obj, opts, manager);
            }
            return Err(Self::not_found(t, name));
        };
        self.write_existing(st, t, &old, obj, sub, Op::Update, opts, manager)
    }

    /// The shared update path once the candidate object is known.
    #[allow(clippy::too_many_arguments)]
    fn write_existing(
        &self,
        st: &mut State,
        t: &Target,
        old: &Arc<Value>,
        mut obj: Value,
        sub: Subresource,
        op: Op,
        opts: &WriteOptions,
        manager: &str,
    ) -> Result<WriteOutcome, ApiError> {
        let name = meta_str(old, "name").to_owned();
        let ns = meta_str(old, "namespace").to_owned();
        let body_rv = meta_str(&obj, "resourceVersion").to_owned();
        if body_rv.is_empty() {
            if !t.rt.unconditional_update && op == Op::Update {
                return Err(ApiError::invalid(
                    &t.rt.group,
                    &t.rt.kind,
                    &name,
                    "metadata.resourceVersion",
                    "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update".into(),
                ));
            }
        } else if body_rv != meta_str(old, "resourceVersion") {
            return Err(ApiError::modified(&t.rt.group, &t.rt.plural, &name));
        }
        let body_uid = meta_str(&obj, "uid").to_owned();
        if !body_uid.is_empty() && body_uid != meta_str(old, "uid") {
            return Err(ApiError::Conflict {
                group: t.rt.group.clone(),
                resource: t.rt.plural.clone(),
                name: name.clone(),
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {body_uid}, UID in object meta: {}",
                    qualified(&t.rt.group, &t.rt.plural),
                    meta_str(old, "uid")
                ),
                causes: Vec::new(),
            });
        }
        let old_v: &Value = old;
        obj = match sub {
            Subresource::Status => {
                // Only status changes; everything else comes from the stored object.
                let mut merged = old_v.clone();
                match obj.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if let Some(mf) = obj["metadata"].get("managedFields") {
                    set_meta(&mut merged, "managedFields", mf.clone());
                }
                merged
            }
            Subresource::Finalize => {
                let mut merged = old_v.clone();
                merged["spec"]["finalizers"] = obj["spec"]["finalizers"].clone();
                merged
            }
            Subresource::Main | Subresource::Scale => {
                if t.rt.status {
                    match old_v.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            if let Some(m) = obj.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                obj
            }
        };
        // System fields are not writable through updates.
        if let Some(m) = meta_obj(&mut obj) {
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_v["metadata"].get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            m.insert(
                "resourceVersion".into(),
                json!(meta_str(old_v, "resourceVersion")),
            );
            m.remove("selfLink");
        }
        self.builtin_defaults(st, t, &mut obj, Some(old_v));
        let now = now_rfc3339();
        let (mut obj, warnings) =
            self.admit(st, t, Some(old_v), obj, sub, op, opts, manager, &now)?;
        if spec_part(&obj, t.rt.status) != spec_part(old_v, t.rt.status)
            && !old_v["metadata"]["generation"].is_null()
        {
            let g = old_v["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            set_meta(&mut obj, "generation", json!(g));
        }
        if comparable(&obj) == comparable(old_v) {
            // No-op writes change nothing (no new resourceVersion, no event).
            return Ok(WriteOutcome {
                object: w::with_api_version(old_v, &t.api_version()),
                warnings,
                created: false,
            });
        }
        if opts.dry_run {
            return Ok(WriteOutcome {
                object: w::with_api_version(&obj, &t.api_version()),
                warnings,
                created: false,
            });
        }
        let key = t.rt.key();
        let deleting = !meta_str(&obj, "deletionTimestamp").is_empty();
        let gone = deleting
            && finalizers(&obj).is_empty()
            && !(t.rt.group.is_empty()
                && t.rt.plural == "namespaces"
                && obj["spec"]["finalizers"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty()))
            && obj["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0;
        let stored = if gone {
            let last = st
                .store
                .remove(&key, &ns, &name, Some(obj))
                .unwrap_or_else(|| old.clone());
            self.after_remove(st, t, &last);
            last
        } else {
            let stored = st.store.put(&key, obj);
            self.after_commit(st, t, &stored);
            stored
        };
        Ok(WriteOutcome {
            object: w::with_api_version(&stored, &t.api_version()),
            warnings,
            created: false,
        })
    }

    fn after_remove(&self, st: &mut State, t: &Target, last: &Value) {
        if t.rt.group == "apiextensions.k8s.io"
            && t.rt.plural == "customresourcedefinitions"
            && let Ok(rt) = crate::registry::crd_type(last)
        {
            let key = rt.key();
            if st.registry.get(&key).is_some_and(|r| r.is_custom()) {
                st.registry.remove(&key);
                st.store.remove_type(&key);
            }
        }
    }

    /// The `autoscaling/v1 Scale` view of an object.
    pub fn get_scale(&self, t: &Target, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        let t = self.refresh(&st, t)?;
        let ns = Self::ns_of(&t, ns)?;
        let obj = st
            .store
            .get(&t.rt.key(), ns, name)
            .ok_or_else(|| Self::not_found(&t, name))?;
        Self::scale_of(&t, &obj)
    }

    fn scale_of(t: &Target, obj: &Value) -> Result<Value, ApiError> {
        let spec = t.rt.scale.as_ref().ok_or(ApiError::NoRoute)?;
        let replicas = get_path(obj, &spec.spec_replicas_path)
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let status_replicas = get_path(obj, &spec.status_replicas_path)
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let selector = if t.rt.is_custom() {
            spec.label_selector_path
                .as_deref()
                .and_then(|p| get_path(obj, p))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            selector_string(&obj["spec"]["selector"])
        };
        let meta = &obj["metadata"];
        let mut status = json!({"replicas": status_replicas});
        if !selector.is_empty() {
            status["selector"] = json!(selector);
        }
        Ok(json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
            "spec": {"replicas": replicas},
            "status": status,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn update_scale_locked(
        &self,
        st: &mut State,
        t: &Target,
        ns: &str,
        name: &str,
        scale: Value,
        opts: &WriteOptions,
        manager: &str,
    ) -> Result<WriteOutcome, ApiError> {
        let spec = t.rt.scale.clone().ok_or(ApiError::NoRoute)?;
        let old = st
            .store
            .get(&t.rt.key(), ns, name)
            .ok_or_else(|| Self::not_found(t, name))?;
        let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                "spec.replicas",
                "FieldValueInvalid",
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut obj = (*old).clone();
        set_path(&mut obj, &spec.spec_replicas_path, json!(replicas));
        let rv = meta_str(&scale, "resourceVersion").to_owned();
        set_meta(&mut obj, "resourceVersion", json!(rv));
        let out = self.write_existing(
            st,
            t,
            &old,
            obj,
            Subresource::Scale,
            Op::Apply,
            &WriteOptions {
                field_validation: FieldValidation::Ignore,
                ..opts.clone()
            },
            manager,
        )?;
        Ok(WriteOutcome {
            object: Self::scale_of(t, &out.object)?,
            warnings: out.warnings,
            created: false,
        })
    }

    /// Patches an object (or a subresource). Apply patches create missing objects.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        t: &Target,
        ns: Option<&str>,
        name: &str,
        kind: PatchType,
        patch_body: &Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, ApiError> {
        let mut st = self.lock();
        let t = self.refresh(&st, t)?;
        let manager = opts
            .field_manager
            .clone()
            .unwrap_or_else(|| "kube-sim".into());
        let out = self.patch_locked(&mut st, &t, ns, name, kind, patch_body, sub, opts, &manager);
        drop(st);
        self.notify();
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch_locked(
        &self,
        st: &mut State,
        t: &Target,
        ns: Option<&str>,
        name: &str,
        kind: PatchType,
        patch_body: &Value,
        sub: Subresource,
        opts: &WriteOptions,
        manager: &str,
    ) -> Result<WriteOutcome, ApiError> {
        let ns = Self::ns_of(t, ns)?;
        if kind == PatchType::Strategic && !t.rt.strategic {
            return Err(ApiError::UnsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".to_owned()));
        }
        let key = t.rt.key();
        let old = st.store.get(&key, ns, name);
        let api_version = t.api_version();
        let patch_err = |e: patch::PatchError| match e {
            patch::PatchError::BadRequest(m) => ApiError::BadRequest(m),
            patch::PatchError::Unprocessable(m) => {
                ApiError::invalid(&t.rt.group, &t.rt.kind, name, "", "FieldValueInvalid", m)
            }
        };
        if sub == Subresource::Scale {
            let old = old.ok_or_else(|| Self::not_found(t, name))?;
            let mut scale = Self::scale_of(t, &old)?;
            match kind {
                PatchType::Merge | PatchType::Apply => patch::merge_patch(&mut scale, patch_body),
                PatchType::Json => patch::json_patch(&mut scale, patch_body).map_err(patch_err)?,
                PatchType::Strategic => {
                    scale = patch::strategic_merge_patch(&scale, patch_body, &patch::NoListKeys)
                        .map_err(patch_err)?;
                }
            }
            return self.update_scale_locked(st, t, ns, name, scale, opts, manager);
        }
        let Some(old) = old else {
            if kind == PatchType::Apply && sub == Subresource::Main {
                return self.apply_create(st, t, ns, name, patch_body, opts, manager);
            }
            return Err(Self::not_found(t, name));
        };
        let current = w::with_api_version(&old, &api_version);
        let (patched, op) = match kind {
            PatchType::Merge => {
                let mut v = current.clone();
                if !patch_body.is_object() {
                    return Err(ApiError::BadRequest(
                        "json: cannot unmarshal into Go value of type map[string]interface {}"
                            .into(),
                    ));
                }
                patch::merge_patch(&mut v, patch_body);
                (v, Op::Update)
            }
            PatchType::Json => {
                let mut v = current.clone();
                patch::json_patch(&mut v, patch_body).map_err(patch_err)?;
                (v, Op::Update)
            }
            PatchType::Strategic => {
                let keys = Self::list_keys(t);
                (
                    patch::strategic_merge_patch(&current, patch_body, keys.as_ref())
                        .map_err(patch_err)?,
                    Op::Update,
                )
            }
            PatchType::Apply => {
                let mut applied = patch_body.clone();
                Self::check_body_type(t, &mut applied)?;
                let keys = Self::list_keys(t);
                let now = now_rfc3339();
                let merged = patch::apply(
                    Some(&current),
                    &applied,
                    keys.as_ref(),
                    &patch::ApplyOptions {
                        manager,
                        force: opts.force,
                        subresource: sub.name(),
                        has_status_subresource: t.rt.status,
                        now: &now,
                    },
                )
                .map_err(|e| self.apply_error(t, name, e))?;
                (merged, Op::Apply)
            }
        };
        let mut patched = patched;
        if !patched.is_object() {
            return Err(ApiError::BadRequest(
                "the patch produced an object that is not a JSON object".into(),
            ));
        }
        Self::check_body_type(t, &mut patched)?;
        if meta_str(&patched, "name") != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&patched, "name")
            )));
        }
        Self::check_namespace(t, &mut patched, ns)?;
        // A resourceVersion in the patch is a precondition; otherwise the patch applies to the
        // current state (server-side retries are unnecessary: we hold the lock).
        let patch_rv = patch_body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let rv = if patch_rv.is_empty() {
            meta_str(&old, "resourceVersion").to_owned()
        } else {
            patch_rv
        };
        set_meta(&mut patched, "resourceVersion", json!(rv));
        self.write_existing(st, t, &old, patched, sub, op, opts, manager)
    }

    fn apply_error(&self, t: &Target, name: &str, e: patch::ApplyError) -> ApiError {
        match e {
            patch::ApplyError::Invalid(m) => ApiError::BadRequest(m),
            patch::ApplyError::Conflict(c) => {
                let n = c.0.len();
                let lines: Vec<String> =
                    c.0.iter()
                        .map(|x| {
                            format!(
                                "conflict with \"{}\"{} using {}: {}",
                                x.manager,
                                x.subresource
                                    .as_deref()
                                    .map(|s| format!(" with subresource \"{s}\""))
                                    .unwrap_or_default(),
                                x.api_version,
                                x.field
                            )
                        })
                        .collect();
                let message = if n == 1 {
                    format!("Apply failed with 1 conflict: {}", lines[0])
                } else {
                    format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
                };
                let causes = c
                    .0
                    .iter()
                    .map(|x| Cause {
                        reason: "FieldManagerConflict".into(),
                        message: format!("conflict with \"{}\" using {}", x.manager, x.api_version),
                        field: x.field.clone(),
                    })
                    .collect();
                ApiError::Conflict {
                    group: t.rt.group.clone(),
                    resource: t.rt.plural.clone(),
                    name: name.to_owned(),
                    message,
                    causes,
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_create(
        &self,
        st: &mut State,
        t: &Target,
        ns: &str,
        name: &str,
        body: &Value,
        opts: &WriteOptions,
        manager: &str,
    ) -> Result<WriteOutcome, ApiError> {
        let mut applied = body.clone();
        Self::check_body_type(t, &mut applied)?;
        if meta_str(&applied, "name") != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&applied, "name")
            )));
        }
        let keys = Self::list_keys(t);
        let now = now_rfc3339();
        let merged = patch::apply(
            None,
            &applied,
            keys.as_ref(),
            &patch::ApplyOptions {
                manager,
                force: opts.force,
                subresource: None,
                has_status_subresource: t.rt.status,
                now: &now,
            },
        )
        .map_err(|e| self.apply_error(t, name, e))?;
        // Create with the managedFields apply computed (an Apply entry, not an Update).
        let out = self.create_locked_as(
            st,
            t,
            Some(ns).filter(|n| !n.is_empty()),
            merged,
            opts,
            manager,
            Op::Apply,
        )?;
        Ok(out)
    }

    /// Deletes an object.
    pub fn delete(
        &self,
        t: &Target,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let mut st = self.lock();
        let t = self.refresh(&st, t)?;
        let ns = Self::ns_of(&t, ns)?.to_owned();
        let out = self.delete_locked(&mut st, &t, &ns, name, opts);
        drop(st);
        self.notify();
        out
    }

    pub(crate) fn delete_locked(
        &self,
        st: &mut State,
        t: &Target,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let key = t.rt.key();
        let old = st
            .store
            .get(&key, ns, name)
            .ok_or_else(|| Self::not_found(t, name))?;
        if t.rt.group.is_empty()
            && t.rt.plural == "namespaces"
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::Forbidden {
                group: String::new(),
                resource: "namespaces".into(),
                name: name.to_owned(),
                message: format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                ),
            });
        }
        let precondition = |what: &str, want: &str, have: &str| ApiError::Conflict {
            group: t.rt.group.clone(),
            resource: t.rt.plural.clone(),
            name: name.to_owned(),
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}",
                qualified(&t.rt.group, &t.rt.plural)
            ),
            causes: Vec::new(),
        };
        if let Some(uid) = opts.precondition_uid.as_deref().filter(|u| !u.is_empty())
            && uid != meta_str(&old, "uid")
        {
            return Err(precondition("UID", uid, meta_str(&old, "uid")));
        }
        if let Some(rv) = opts
            .precondition_resource_version
            .as_deref()
            .filter(|u| !u.is_empty())
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(precondition(
                "ResourceVersion",
                rv,
                meta_str(&old, "resourceVersion"),
            ));
        }
        let mut obj = (*old).clone();
        let mut fins = finalizers(&obj);
        match opts.propagation {
            Some(Propagation::Foreground) if !fins.iter().any(|f| f == FOREGROUND_FINALIZER) => {
                fins.retain(|f| f != ORPHAN_FINALIZER);
                fins.push(FOREGROUND_FINALIZER.into());
            }
            Some(Propagation::Orphan) if !fins.iter().any(|f| f == ORPHAN_FINALIZER) => {
                fins.retain(|f| f != FOREGROUND_FINALIZER);
                fins.push(ORPHAN_FINALIZER.into());
            }
            _ => {}
        }
        let already = !meta_str(&obj, "deletionTimestamp").is_empty();
        let now = Utc::now();
        let is_ns = t.rt.group.is_empty() && t.rt.plural == "namespaces";
        let ns_finalizers = is_ns
            && obj["spec"]["finalizers"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
        // Pods bound to a node terminate gracefully (a kubelet would stop them); the
        // controllers remove them when the grace period ends, unless deleted with grace 0.
        let grace = if t.rt.group.is_empty()
            && t.rt.plural == "pods"
            && !obj["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        {
            opts.grace_period_seconds
                .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0)
        } else {
            0
        };
        if fins.is_empty() && !ns_finalizers && (grace == 0 || opts.grace_period_seconds == Some(0))
        {
            if opts.dry_run {
                return Ok(DeleteOutcome {
                    object: w::with_api_version(&old, &t.api_version()),
                    deleted: true,
                });
            }
            let last = st.store.remove(&key, ns, name, None).unwrap_or(old);
            self.after_remove(st, t, &last);
            return Ok(DeleteOutcome {
                object: w::with_api_version(&last, &t.api_version()),
                deleted: true,
            });
        }
        if already && fins == finalizers(&obj) && grace == 0 {
            return Ok(DeleteOutcome {
                object: w::with_api_version(&old, &t.api_version()),
                deleted: false,
            });
        }
        set_finalizers(&mut obj, &fins);
        if let Some(m) = meta_obj(&mut obj)
            && (!already || grace > 0)
        {
            {
                let at = now + chrono::Duration::seconds(grace);
                m.insert(
                    "deletionTimestamp".into(),
                    json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
        }
        if is_ns {
            obj["status"]["phase"] = json!("Terminating");
        }
        if opts.dry_run {
            return Ok(DeleteOutcome {
                object: w::with_api_version(&obj, &t.api_version()),
                deleted: false,
            });
        }
        let stored = st.store.put(&key, obj);
        self.after_commit(st, t, &stored);
        Ok(DeleteOutcome {
            object: w::with_api_version(&stored, &t.api_version()),
            deleted: false,
        })
    }

    /// Deletes every object matching the list options; returns the deleted (or terminating)
    /// objects as a list.
    pub fn delete_collection(
        &self,
        t: &Target,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let filter = make_filter(t, ns, list)?;
        let mut st = self.lock();
        let t = self.refresh(&st, t)?;
        let (items, _, _, _) = self.list_locked(
            &st,
            &t,
            &filter,
            &ListOptions {
                label_selector: list.label_selector.clone(),
                field_selector: list.field_selector.clone(),
                ..ListOptions::default()
            },
        )?;
        let mut out = Vec::new();
        for obj in items {
            let (ons, oname) = (
                meta_str(&obj, "namespace").to_owned(),
                meta_str(&obj, "name").to_owned(),
            );
            if let Ok(d) = self.delete_locked(&mut st, &t, &ons, &oname, opts) {
                out.push(d.object);
            }
        }
        let rv = st.store.current_rv();
        drop(st);
        self.notify();
        Ok(
            json!({"kind": t.rt.list_kind, "apiVersion": t.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": out}),
        )
    }

    /// Mints a token for a ServiceAccount (the TokenRequest subresource).
    pub fn create_token(&self, ns: &str, name: &str, request: &Value) -> Result<Value, ApiError> {
        let uid = self
            .service_account_uid(ns, name)
            .ok_or_else(|| ApiError::NotFound {
                group: String::new(),
                resource: "serviceaccounts".into(),
                name: name.to_owned(),
            })?;
        let audiences: Vec<String> = request["spec"]["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let seconds = request["spec"]["expirationSeconds"]
            .as_i64()
            .unwrap_or(3600);
        if seconds < 600 {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                name,
                "spec.expirationSeconds",
                "FieldValueInvalid",
                format!(
                    "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        let expiry = Utc::now() + chrono::Duration::seconds(seconds);
        let token = self
            .authenticator
            .mint_service_account_token(ns, name, &uid, &audiences, Some(expiry))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut spec = request["spec"].clone();
        if !spec.is_object() {
            spec = json!({});
        }
        spec["expirationSeconds"] = json!(seconds);
        if spec["audiences"].is_null() {
            spec["audiences"] = json!([crate::auth::API_AUDIENCE]);
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expiry.to_rfc3339_opts(SecondsFormat::Secs, true)},
        }))
    }

    // ----- convenience API by apiVersion/kind (for the simulated world) -----

    /// Creates `obj` (typed by its `apiVersion`/`kind`).
    pub fn create_object(&self, obj: Value) -> Result<Value, ApiError> {
        let t = self.resolve_kind(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )?;
        Ok(self.create(&t, None, obj, &WriteOptions::default())?.object)
    }

    /// Gets an object by apiVersion/kind/namespace/name.
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let t = self.resolve_kind(api_version, kind)?;
        self.get(&t, ns, name)
    }

    /// Lists objects by apiVersion/kind.
    pub fn list_objects(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let t = self.resolve_kind(api_version, kind)?;
        self.list(&t, ns, opts)
    }

    /// Replaces `obj` (PUT semantics, optimistic concurrency on its resourceVersion).
    pub fn update_object(&self, obj: Value) -> Result<Value, ApiError> {
        self.update_object_at(obj, Subresource::Main)
    }

    /// Replaces the status of `obj`.
    pub fn update_object_status(&self, obj: Value) -> Result<Value, ApiError> {
        self.update_object_at(obj, Subresource::Status)
    }

    /// PUT of `obj` on the main resource or a subresource, addressed by its own
    /// apiVersion, kind, namespace and name.
    fn update_object_at(&self, obj: Value, subresource: Subresource) -> Result<Value, ApiError> {
        let t = self.resolve_kind(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )?;
        let (ns, name) = (
            meta_str(&obj, "namespace").to_owned(),
            meta_str(&obj, "name").to_owned(),
        );
        Ok(self
            .update(
                &t,
                Some(&ns).filter(|n| !n.is_empty()).map(String::as_str),
                &name,
                obj,
                subresource,
                &WriteOptions::default(),
            )?
            .object)
    }

    /// Patches an object by apiVersion/kind.
    #[allow(clippy::too_many_arguments)]
    pub fn patch_object(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let t = self.resolve_kind(api_version, kind)?;
        Ok(self
            .patch(&t, ns, name, patch_type, body, Subresource::Main, opts)?
            .object)
    }

    /// Server-side applies `obj` (typed by its `apiVersion`/`kind`, addressed by its
    /// namespace/name) as `manager`, taking over conflicting fields when `force` is set.
    pub fn apply_object(&self, obj: &Value, manager: &str, force: bool) -> Result<Value, ApiError> {
        let t = self.resolve_kind(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )?;
        let ns = meta_str(obj, "namespace");
        let opts = WriteOptions {
            field_manager: Some(manager.to_owned()),
            force,
            ..WriteOptions::default()
        };
        let ns = Some(ns).filter(|n| !n.is_empty());
        Ok(self
            .patch(
                &t,
                ns,
                meta_str(obj, "name"),
                PatchType::Apply,
                obj,
                Subresource::Main,
                &opts,
            )?
            .object)
    }

    /// Deletes an object by apiVersion/kind.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let t = self.resolve_kind(api_version, kind)?;
        self.delete(&t, ns, name, opts)
    }

    /// Watches objects by apiVersion/kind.
    pub fn watch_objects(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        opts: &WatchOptions,
    ) -> Result<WatchStream, ApiError> {
        let t = self.resolve_kind(api_version, kind)?;
        self.watch(&t, ns, opts)
    }
}

fn schema_list_keys(schema: &Value) -> Box<dyn ListKeys> {
    Box::new(crate::schema::SchemaListKeys::new(schema.clone()))
}

/// Removes fields of `input` that the typed round trip (`known`) dropped; records their paths.
fn prune_unknown(input: &mut Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            let mut drop = Vec::new();
            for (key, v) in i.iter_mut() {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    None => drop.push((key.clone(), p)),
                    Some(kv) => prune_unknown(v, kv, &p, out),
                }
            }
            for (key, p) in drop {
                i.remove(&key);
                out.push(p);
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (a, b)) in i.iter_mut().zip(k).enumerate() {
                prune_unknown(a, b, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// The few built-in validations clients run into (required fields, selector/template match).
fn builtin_validate(t: &Target, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let containers =
        |spec: &Value, prefix: &str, causes: &mut Vec<Cause>| match spec["containers"].as_array() {
            Some(cs) if !cs.is_empty() => {
                for (i, c) in cs.iter().enumerate() {
                    for f in ["name", "image"] {
                        if c[f].as_str().is_none_or(str::is_empty) {
                            causes.push(cause(
                                &format!("{prefix}.containers[{i}].{f}"),
                                "FieldValueRequired",
                                "Required value".into(),
                            ));
                        }
                    }
                }
            }
            _ => causes.push(cause(
                &format!("{prefix}.containers"),
                "FieldValueRequired",
                "Required value".into(),
            )),
        };
    match (t.rt.group.as_str(), t.rt.plural.as_str()) {
        ("", "pods") => containers(&obj["spec"], "spec", &mut causes),
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            let sel = &obj["spec"]["selector"];
            if !sel.is_object() {
                causes.push(cause(
                    "spec.selector",
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            } else {
                let labels = &obj["spec"]["template"]["metadata"]["labels"];
                let matches = sel["matchLabels"]
                    .as_object()
                    .is_none_or(|m| m.iter().all(|(k, v)| &labels[k] == v));
                if !matches {
                    causes.push(cause(
                        "spec.template.metadata.labels",
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: {labels}: `selector` does not match template `labels`"
                        ),
                    ));
                }
                if let Some(old) = old
                    && old["spec"]["selector"] != *sel
                {
                    causes.push(cause(
                        "spec.selector",
                        "FieldValueInvalid",
                        format!("Invalid value: {sel}: field is immutable"),
                    ));
                }
            }
            containers(
                &obj["spec"]["template"]["spec"],
                "spec.template.spec",
                &mut causes,
            );
        }
        ("", "services") => {
            let spec = &obj["spec"];
            let external = spec["type"].as_str() == Some("ExternalName");
            let headless = spec["clusterIP"].as_str() == Some("None");
            if !external && !headless && spec["ports"].as_array().is_none_or(Vec::is_empty) {
                causes.push(cause(
                    "spec.ports",
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
        }
        _ => {}
    }
    causes
}

/// Splits `group/version` (core: `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn make_filter(t: &Target, ns: Option<&str>, opts: &ListOptions) -> Result<Filter, ApiError> {
    let labels = match opts
        .label_selector
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        Some(s) => LabelSelector::parse(s)
            .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?,
        None => LabelSelector::default(),
    };
    let fields = match opts
        .field_selector
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        Some(s) => FieldSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => FieldSelector::default(),
    };
    let selectable: Vec<String> =
        t.rt.crd
            .as_ref()
            .and_then(|c| c.selectable_fields.get(&t.version).cloned())
            .unwrap_or_default();
    fields
        .check_supported(&t.rt.group, &t.rt.plural, &selectable)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Filter {
        namespace: ns.filter(|n| !n.is_empty()).map(str::to_owned),
        labels,
        fields,
    })
}
