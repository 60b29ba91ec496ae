//! The object store of one cluster: objects per resource type, one resourceVersion sequence, and a
//! bounded per-type history of changes.
//!
//! The history serves three needs at once: watches resuming from a resourceVersion, list pages
//! that must stay consistent at the first page's resourceVersion (`continue`), and `Exact` reads
//! of an older resourceVersion. Each history event keeps the object before the change, so an older
//! state is rebuilt by undoing the newer events; once events are evicted (`watch_history` per
//! type), older states answer 410 Gone, as etcd compaction does for kube-apiserver.
//!
//! The store is plain data: the API server holds it behind a mutex that is never held across I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::registry::TypeKey;

/// The kind of change an [`Event`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// The watch event type name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for deletions: the last state, carrying the deletion's
    /// resourceVersion, as kube-apiserver sends it).
    pub object: Arc<Value>,
    /// The object before the change (`None` for creations).
    pub prev: Option<Arc<Value>>,
}

/// Namespace (empty for cluster-scoped) and name.
pub type ObjKey = (String, String);

/// A watch's start: the events still in history after its resourceVersion, and a receiver for
/// later ones.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// Converts an object of one type into its mirror type.
pub type Convert = fn(&Value) -> Value;

/// A state older than the history keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest resourceVersion that can still be served.
    pub oldest: u64,
}

/// Objects and history of one resource type.
#[derive(Debug)]
pub struct TypeStore {
    objects: BTreeMap<ObjKey, Arc<Value>>,
    history: VecDeque<Arc<Event>>,
    /// Every change after this resourceVersion is in `history` (older ones may be evicted).
    complete_after: u64,
    /// Broadcasts new events to watchers; dropping it (type removed) ends their watches.
    tx: broadcast::Sender<Arc<Event>>,
}

impl TypeStore {
    fn new(complete_after: u64, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        TypeStore {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            complete_after,
            tx,
        }
    }

    /// The objects, ordered by namespace and name.
    pub fn objects(&self) -> &BTreeMap<ObjKey, Arc<Value>> {
        &self.objects
    }

    /// The objects of one namespace (all objects for `None`), in key order. A namespaced
    /// request walks only its own key range, so a busy namespace does not slow down the
    /// lists and watches of another.
    pub fn objects_in<'a>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = (&'a ObjKey, &'a Arc<Value>)> + 'a> {
        match namespace {
            None => Box::new(self.objects.iter()),
            Some(ns) => Box::new(
                self.objects
                    .range((ns.to_owned(), String::new())..)
                    .take_while(move |(key, _)| key.0 == ns),
            ),
        }
    }

    /// A copy of the objects of one namespace (all for `None`): the snapshot a list reads.
    pub fn clone_objects(&self, namespace: Option<&str>) -> BTreeMap<ObjKey, Arc<Value>> {
        match namespace {
            None => self.objects.clone(),
            Some(_) => self
                .objects_in(namespace)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Objects as they were at resourceVersion `rv`.
    pub fn snapshot_at(&self, rv: u64) -> Result<BTreeMap<ObjKey, Arc<Value>>, TooOld> {
        if rv < self.complete_after {
            return Err(TooOld {
                oldest: self.complete_after,
            });
        }
        let mut objects = self.objects.clone();
        for event in self.history.iter().rev() {
            if event.rv <= rv {
                break;
            }
            let key = obj_key(&event.object);
            match (&event.kind, &event.prev) {
                (EventType::Added, _) => {
                    objects.remove(&key);
                }
                (_, Some(prev)) => {
                    objects.insert(key, prev.clone());
                }
                (_, None) => {}
            }
        }
        Ok(objects)
    }

    /// Whether any change happened after `rv`.
    pub fn changed_after(&self, rv: u64) -> bool {
        self.history.back().is_some_and(|e| e.rv > rv)
    }
}

/// All objects of one cluster.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    watch_history: usize,
    types: HashMap<TypeKey, TypeStore>,
    uids: HashMap<String, (TypeKey, ObjKey)>,
    /// Types whose objects are copied (converted) into another type on every change.
    mirrors: HashMap<TypeKey, (TypeKey, Convert)>,
    /// Counts changes the background controllers care about (removals, deletions, owner
    /// references, namespaces, ServiceAccounts, Secrets, CRDs), so they skip idle wake-ups.
    controller_epoch: u64,
}

/// The namespace/name key of a stored object.
pub fn obj_key(obj: &Value) -> ObjKey {
    let meta = &obj["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_owned(),
        meta["name"].as_str().unwrap_or_default().to_owned(),
    )
}

impl Store {
    /// An empty store keeping `watch_history` events per type.
    pub fn new(watch_history: usize) -> Self {
        Store {
            rv: 1,
            watch_history: watch_history.max(1),
            types: HashMap::new(),
            uids: HashMap::new(),
            mirrors: HashMap::new(),
            controller_epoch: 0,
        }
    }

    /// A counter of changes relevant to the background controllers.
    pub fn controller_epoch(&self) -> u64 {
        self.controller_epoch
    }

    /// The latest resourceVersion of the cluster.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Makes sure a type has storage (a new type's history starts now).
    pub fn ensure_type(&mut self, key: &TypeKey) {
        if !self.types.contains_key(key) {
            let ts = TypeStore::new(self.rv, self.watch_history.max(1024));
            self.types.insert(key.clone(), ts);
        }
    }

    /// Drops a type with all its objects, ending its watches.
    pub fn remove_type(&mut self, key: &TypeKey) {
        if let Some(ts) = self.types.remove(key) {
            for obj in ts.objects.values() {
                if let Some(uid) = obj["metadata"]["uid"].as_str() {
                    self.uids.remove(uid);
                }
            }
        }
    }

    /// The storage of a type, if it exists.
    pub fn type_store(&self, key: &TypeKey) -> Option<&TypeStore> {
        self.types.get(key)
    }

    /// All type keys with storage.
    pub fn type_keys(&self) -> Vec<TypeKey> {
        let mut keys: Vec<TypeKey> = self.types.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// One object.
    pub fn get(&self, key: &TypeKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.types
            .get(key)?
            .objects
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The type and key of the object with `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<(TypeKey, ObjKey)> {
        self.uids.get(uid).cloned()
    }

    /// Keeps a converted copy of every object of `source` in `target` (same name, uid and
    /// resourceVersion): one kind served by two groups, like core/v1 and events.k8s.io/v1 Events.
    pub fn add_mirror(&mut self, source: TypeKey, target: TypeKey, convert: Convert) {
        self.mirrors.insert(source, (target, convert));
    }

    /// Stores `obj` (create or replace), assigning the next resourceVersion; returns the stored
    /// object.
    pub fn put(&mut self, key: &TypeKey, obj: Value) -> Arc<Value> {
        let meta = &obj["metadata"];
        if !meta["ownerReferences"].is_null()
            || !meta["deletionTimestamp"].is_null()
            || matches!(
                key.resource.as_str(),
                "namespaces" | "serviceaccounts" | "secrets" | "customresourcedefinitions"
            )
        {
            self.controller_epoch += 1;
        }
        self.rv += 1;
        let rv = self.rv;
        let stored = self.put_at(key, obj, rv, true);
        if let Some((target, convert)) = self.mirrors.get(key).cloned() {
            self.put_at(&target, convert(&stored), rv, false);
        }
        stored
    }

    fn put_at(&mut self, key: &TypeKey, mut obj: Value, rv: u64, index: bool) -> Arc<Value> {
        self.ensure_type(key);
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let okey = obj_key(&obj);
        let uid = obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let obj = Arc::new(obj);
        let history = self.watch_history;
        let Some(ts) = self.types.get_mut(key) else {
            return obj;
        };
        let prev = ts.objects.insert(okey.clone(), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        if index && !uid.is_empty() {
            self.uids.insert(uid, (key.clone(), okey));
        }
        record(
            ts,
            history,
            Event {
                rv,
                kind,
                object: obj.clone(),
                prev,
            },
        );
        obj
    }

    /// Removes an object; `last` is its final state (the DELETED event shows it with the
    /// deletion's resourceVersion).
    pub fn remove(
        &mut self,
        key: &TypeKey,
        ns: &str,
        name: &str,
        last: Option<Value>,
    ) -> Option<Arc<Value>> {
        if !self
            .types
            .get(key)?
            .objects
            .contains_key(&(ns.to_owned(), name.to_owned()))
        {
            return None;
        }
        self.rv += 1;
        self.controller_epoch += 1;
        let rv = self.rv;
        let removed = self.remove_at(key, ns, name, last, rv, true);
        if let Some((target, _)) = self.mirrors.get(key).cloned() {
            self.remove_at(&target, ns, name, None, rv, false);
        }
        removed
    }

    fn remove_at(
        &mut self,
        key: &TypeKey,
        ns: &str,
        name: &str,
        last: Option<Value>,
        rv: u64,
        index: bool,
    ) -> Option<Arc<Value>> {
        let history = self.watch_history;
        let ts = self.types.get_mut(key)?;
        let prev = ts.objects.remove(&(ns.to_owned(), name.to_owned()))?;
        let mut last = last.unwrap_or_else(|| (*prev).clone());
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        if index && let Some(uid) = prev["metadata"]["uid"].as_str() {
            self.uids.remove(uid);
        }
        let last = Arc::new(last);
        record(
            ts,
            history,
            Event {
                rv,
                kind: EventType::Deleted,
                object: last.clone(),
                prev: Some(prev),
            },
        );
        Some(last)
    }

    /// Starts a watch of a type from `from_rv`: the events after it still in history, and a
    /// receiver for later ones. Both are taken under the caller's lock, so nothing is missed.
    pub fn subscribe(&self, key: &TypeKey, from_rv: u64) -> Result<Subscription, TooOld> {
        let Some(ts) = self.types.get(key) else {
            return Err(TooOld { oldest: self.rv });
        };
        if from_rv < ts.complete_after {
            return Err(TooOld {
                oldest: ts.complete_after,
            });
        }
        let backlog = ts
            .history
            .iter()
            .filter(|e| e.rv > from_rv)
            .cloned()
            .collect();
        Ok((backlog, ts.tx.subscribe()))
    }

    /// Every object of every type (for the garbage collector).
    pub fn iter_all(&self) -> impl Iterator<Item = (&TypeKey, &Arc<Value>)> {
        self.types
            .iter()
            .flat_map(|(k, ts)| ts.objects.values().map(move |o| (k, o)))
    }
}

fn record(ts: &mut TypeStore, history: usize, event: Event) {
    let event = Arc::new(event);
    ts.history.push_back(event.clone());
    while ts.history.len() > history {
        if let Some(old) = ts.history.pop_front() {
            ts.complete_after = old.rv;
        }
    }
    // No receivers is fine: nobody watches.
    let _ = ts.tx.send(event);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> TypeKey {
        TypeKey {
            group: String::new(),
            resource: "configmaps".into(),
        }
    }

    fn cm(name: &str, v: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")}, "data": {"v": v}})
    }

    #[test]
    fn resource_versions_increase_and_snapshots_rebuild_the_past() {
        let mut s = Store::new(100);
        let k = key();
        s.put(&k, cm("a", "1"));
        let after_a = s.current_rv();
        s.put(&k, cm("b", "1"));
        s.put(&k, cm("a", "2"));
        s.remove(&k, "ns", "b", None);
        assert!(s.current_rv() > after_a + 2);
        let ts = s.type_store(&k).unwrap();
        let past = ts.snapshot_at(after_a).unwrap();
        assert_eq!(past.len(), 1);
        assert_eq!(past[&("ns".into(), "a".into())]["data"]["v"], "1");
        let now = ts.snapshot_at(s.current_rv()).unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[&("ns".into(), "a".into())]["data"]["v"], "2");
        assert_eq!(s.by_uid("uid-a").unwrap().1.1, "a");
        assert!(s.by_uid("uid-b").is_none());
    }

    #[test]
    fn evicted_history_is_too_old() {
        let mut s = Store::new(2);
        let k = key();
        s.put(&k, cm("a", "1"));
        let first = s.current_rv();
        for i in 0..5 {
            s.put(&k, cm("a", &i.to_string()));
        }
        let ts = s.type_store(&k).unwrap();
        assert!(ts.snapshot_at(first).is_err());
        assert!(s.subscribe(&k, first).is_err());
        let (backlog, _rx) = s.subscribe(&k, s.current_rv() - 1).unwrap();
        assert_eq!(backlog.len(), 1);
    }

    #[test]
    fn deleted_event_carries_new_resource_version_and_previous_state() {
        let mut s = Store::new(10);
        let k = key();
        s.put(&k, cm("a", "1"));
        let (_, mut rx) = s.subscribe(&k, s.current_rv()).unwrap();
        s.remove(&k, "ns", "a", None);
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.kind, EventType::Deleted);
        assert_eq!(
            ev.object["metadata"]["resourceVersion"],
            s.current_rv().to_string()
        );
        assert_eq!(ev.prev.as_ref().unwrap()["data"]["v"], "1");
    }
}
