//! Background controllers of the API server: the work kube-controller-manager and the
//! apiextensions server do asynchronously in a real cluster.
//!
//! - garbage collection by owner **uid**: Background (dependents whose owners are all gone are
//!   deleted; dangling references next to live owners are removed), Foreground (the
//!   `foregroundDeletion` finalizer stays until dependents with `blockOwnerDeletion` are gone) and
//!   Orphan (the `orphan` finalizer: dependents lose their reference to the owner);
//! - graceful deletion: objects whose grace period ended (pods bound to a node) are removed;
//! - namespace finalization: a terminating namespace's contents are deleted, then the
//!   `kubernetes` spec finalizer is removed and the namespace goes;
//! - CRD cleanup: a deleted CRD's objects are deleted, then the type stops being served;
//! - the `default` ServiceAccount and `kube-root-ca.crt` ConfigMap in every namespace;
//! - the token controller: `kubernetes.io/service-account-token` Secrets get `token`, `ca.crt`
//!   and `namespace`; token Secrets of deleted ServiceAccounts are deleted.
//!
//! Each pass runs under the cluster lock (in-memory work only) and repeats until nothing changes,
//! so cascades (owner → dependent → its dependents) settle in one wake-up.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::api_server::{
    ApiServer, CRD_CLEANUP_FINALIZER, DeleteOptions, FOREGROUND_FINALIZER, NAMESPACE_FINALIZER,
    ORPHAN_FINALIZER, Propagation, State, Target, WriteOptions,
};
use crate::registry::TypeKey;

/// The annotation naming a token Secret's ServiceAccount.
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// The annotation recording the ServiceAccount's uid.
pub const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// The Secret type of legacy ServiceAccount token Secrets.
pub const SA_TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";

/// The manager name controllers write with.
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

fn key(group: &str, resource: &str) -> TypeKey {
    TypeKey {
        group: group.to_owned(),
        resource: resource.to_owned(),
    }
}

fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
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

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn deleting(obj: &Value) -> bool {
    !meta(obj, "deletionTimestamp").is_empty()
}

impl ApiServer {
    fn target_for(st: &State, key: &TypeKey) -> Option<Target> {
        let rt = st.registry.get(key)?;
        Some(Target {
            version: rt.storage_version.clone(),
            rt,
        })
    }

    /// Stores a controller's change without admission (controllers only touch metadata they
    /// own); removes the object when it is being deleted and no finalizer is left.
    fn system_put(&self, st: &mut State, key: &TypeKey, obj: Value) {
        let gone_at = obj["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let ns_finalizers = key.group.is_empty()
            && key.resource == "namespaces"
            && obj["spec"]["finalizers"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
        let gone = gone_at.is_some_and(|t| t <= Utc::now())
            && finalizers(&obj).is_empty()
            && !ns_finalizers;
        if gone {
            let (ns, name) = (
                meta(&obj, "namespace").to_owned(),
                meta(&obj, "name").to_owned(),
            );
            if let Some(last) = st.store.remove(key, &ns, &name, Some(obj)) {
                self.after_system_remove(st, key, &last);
            }
        } else {
            st.store.put(key, obj);
        }
    }

    fn after_system_remove(&self, st: &mut State, key: &TypeKey, last: &Value) {
        if key.group == "apiextensions.k8s.io"
            && key.resource == "customresourcedefinitions"
            && let Ok(rt) = crate::registry::crd_type(last)
        {
            let k = rt.key();
            if st.registry.get(&k).is_some_and(|r| r.is_custom()) {
                st.registry.remove(&k);
                st.store.remove_type(&k);
            }
        }
    }

    fn delete_system(
        &self,
        st: &mut State,
        key: &TypeKey,
        ns: &str,
        name: &str,
        propagation: Propagation,
    ) {
        if let Some(t) = Self::target_for(st, key) {
            let opts = DeleteOptions {
                propagation: Some(propagation),
                ..DeleteOptions::default()
            };
            if let Err(e) = self.delete_locked(st, &t, ns, name, &opts) {
                tracing::debug!(cluster = self.name(), error = %e, "Deleting object failed");
            }
        }
    }

    /// Runs every controller until the cluster settles.
    pub(crate) fn reconcile_locked(&self, st: &mut State) {
        for _ in 0..32 {
            let before = st.store.current_rv();
            self.expire_grace_periods(st);
            self.orphan_dependents(st);
            self.foreground_deletion(st);
            self.collect_garbage(st);
            self.finalize_namespaces(st);
            self.cleanup_crds(st);
            self.namespace_defaults(st);
            self.token_secrets(st);
            if st.store.current_rv() == before {
                break;
            }
        }
    }

    fn all_objects(st: &State) -> Vec<(TypeKey, Arc<Value>)> {
        st.store
            .iter_all()
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect()
    }

    /// Gracefully deleted objects (pods bound to a node) go once their containers would have
    /// stopped: nothing runs here, so like a kubelet whose containers exit promptly, after at
    /// most one second of the grace period.
    fn expire_grace_periods(&self, st: &mut State) {
        let now = Utc::now();
        let expired: Vec<(TypeKey, Arc<Value>)> = Self::all_objects(st)
            .into_iter()
            .filter(|(_, o)| {
                let grace = o["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(0);
                grace > 0
                    && finalizers(o).is_empty()
                    && o["metadata"]["deletionTimestamp"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| {
                            t - chrono::Duration::seconds(grace)
                                + chrono::Duration::seconds(grace.min(1))
                                <= now
                        })
            })
            .collect();
        for (k, o) in expired {
            let (ns, name) = (
                meta(&o, "namespace").to_owned(),
                meta(&o, "name").to_owned(),
            );
            st.store.remove(&k, &ns, &name, None);
        }
    }

    fn dependents_of(st: &State, uid: &str) -> Vec<(TypeKey, Arc<Value>)> {
        st.store
            .iter_all()
            .filter(|(_, o)| owner_uids(o).iter().any(|u| u == uid))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect()
    }

    fn remove_finalizer(&self, st: &mut State, key: &TypeKey, obj: &Value, finalizer: &str) {
        let mut updated = obj.clone();
        let fins: Vec<String> = finalizers(obj)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        if let Some(m) = updated["metadata"].as_object_mut() {
            if fins.is_empty() {
                m.remove("finalizers");
            } else {
                m.insert("finalizers".into(), json!(fins));
            }
        }
        self.system_put(st, key, updated);
    }

    fn orphan_dependents(&self, st: &mut State) {
        let owners: Vec<(TypeKey, Arc<Value>)> = Self::all_objects(st)
            .into_iter()
            .filter(|(_, o)| deleting(o) && finalizers(o).iter().any(|f| f == ORPHAN_FINALIZER))
            .collect();
        for (okey, owner) in owners {
            let uid = meta(&owner, "uid").to_owned();
            for (dkey, dep) in Self::dependents_of(st, &uid) {
                let mut updated = (*dep).clone();
                if let Some(refs) = updated["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"].as_str() != Some(uid.as_str()));
                    if refs.is_empty()
                        && let Some(m) = updated["metadata"].as_object_mut()
                    {
                        m.remove("ownerReferences");
                    }
                }
                self.system_put(st, &dkey, updated);
            }
            if let Some(current) =
                st.store
                    .get(&okey, meta(&owner, "namespace"), meta(&owner, "name"))
            {
                self.remove_finalizer(st, &okey, &current, ORPHAN_FINALIZER);
            }
        }
    }

    fn foreground_deletion(&self, st: &mut State) {
        let owners: Vec<(TypeKey, Arc<Value>)> = Self::all_objects(st)
            .into_iter()
            .filter(|(_, o)| deleting(o) && finalizers(o).iter().any(|f| f == FOREGROUND_FINALIZER))
            .collect();
        for (okey, owner) in owners {
            let uid = meta(&owner, "uid").to_owned();
            let deps = Self::dependents_of(st, &uid);
            let mut blocking = false;
            for (dkey, dep) in &deps {
                let blocks = dep["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| {
                        refs.iter().any(|r| {
                            r["uid"].as_str() == Some(uid.as_str())
                                && r["blockOwnerDeletion"].as_bool() == Some(true)
                        })
                    });
                blocking |= blocks;
                if !deleting(dep) {
                    let (ns, name) = (
                        meta(dep, "namespace").to_owned(),
                        meta(dep, "name").to_owned(),
                    );
                    self.delete_system(st, dkey, &ns, &name, Propagation::Foreground);
                }
            }
            if !blocking
                && let Some(current) =
                    st.store
                        .get(&okey, meta(&owner, "namespace"), meta(&owner, "name"))
            {
                self.remove_finalizer(st, &okey, &current, FOREGROUND_FINALIZER);
            }
        }
    }

    fn owner_exists(st: &State, uid: &str, dep_ns: &str) -> bool {
        match st.store.by_uid(uid) {
            // A namespaced owner must be in the dependent's namespace.
            Some((_, (ns, _))) => ns.is_empty() || ns == dep_ns,
            None => false,
        }
    }

    fn collect_garbage(&self, st: &mut State) {
        let candidates: Vec<(TypeKey, Arc<Value>)> = Self::all_objects(st)
            .into_iter()
            .filter(|(_, o)| !owner_uids(o).is_empty())
            .collect();
        for (dkey, dep) in candidates {
            let ns = meta(&dep, "namespace").to_owned();
            let uids = owner_uids(&dep);
            let live: Vec<&String> = uids
                .iter()
                .filter(|u| Self::owner_exists(st, u, &ns))
                .collect();
            if live.is_empty() {
                if !deleting(&dep) {
                    let name = meta(&dep, "name").to_owned();
                    tracing::debug!(cluster = self.name(), resource = %dkey.resource, namespace = %ns, name = %name, "Deleting object whose owners are gone");
                    self.delete_system(st, &dkey, &ns, &name, Propagation::Background);
                }
            } else if live.len() < uids.len() {
                let live: Vec<String> = live.into_iter().cloned().collect();
                let mut updated = (*dep).clone();
                if let Some(refs) = updated["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| {
                        r["uid"]
                            .as_str()
                            .is_some_and(|u| live.iter().any(|l| l == u))
                    });
                }
                self.system_put(st, &dkey, updated);
            }
        }
    }

    fn finalize_namespaces(&self, st: &mut State) {
        let ns_key = key("", "namespaces");
        let terminating: Vec<Arc<Value>> = st
            .store
            .type_store(&ns_key)
            .map(|ts| {
                ts.objects()
                    .values()
                    .filter(|n| deleting(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for ns in terminating {
            let name = meta(&ns, "name").to_owned();
            let mut remaining = 0usize;
            let namespaced: Vec<TypeKey> = st
                .registry
                .all()
                .filter(|t| t.namespaced)
                .map(|t| t.key())
                .collect();
            for tk in namespaced {
                let objs: Vec<Arc<Value>> = st
                    .store
                    .type_store(&tk)
                    .map(|ts| {
                        ts.objects()
                            .values()
                            .filter(|o| meta(o, "namespace") == name)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for o in objs {
                    remaining += 1;
                    if !deleting(&o) {
                        let oname = meta(&o, "name").to_owned();
                        self.delete_system(st, &tk, &name, &oname, Propagation::Background);
                    }
                }
            }
            if remaining == 0
                && let Some(current) = st.store.get(&ns_key, "", &name)
            {
                let mut updated = (*current).clone();
                let spec_fins: Vec<Value> = updated["spec"]["finalizers"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|f| f.as_str() != Some(NAMESPACE_FINALIZER))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                updated["spec"]["finalizers"] = json!(spec_fins);
                if updated != *current || (spec_fins.is_empty() && finalizers(&updated).is_empty())
                {
                    self.system_put(st, &ns_key, updated);
                }
            }
        }
    }

    fn cleanup_crds(&self, st: &mut State) {
        let crd_key = key("apiextensions.k8s.io", "customresourcedefinitions");
        let terminating: Vec<Arc<Value>> = st
            .store
            .type_store(&crd_key)
            .map(|ts| {
                ts.objects()
                    .values()
                    .filter(|c| {
                        deleting(c) && finalizers(c).iter().any(|f| f == CRD_CLEANUP_FINALIZER)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for crd in terminating {
            let Ok(rt) = crate::registry::crd_type(&crd) else {
                self.remove_finalizer(st, &crd_key, &crd, CRD_CLEANUP_FINALIZER);
                continue;
            };
            let tk = rt.key();
            let objs: Vec<Arc<Value>> = st
                .store
                .type_store(&tk)
                .map(|ts| ts.objects().values().cloned().collect())
                .unwrap_or_default();
            for o in &objs {
                if !deleting(o) {
                    let (ns, name) = (meta(o, "namespace").to_owned(), meta(o, "name").to_owned());
                    self.delete_system(st, &tk, &ns, &name, Propagation::Background);
                }
            }
            if objs.is_empty() {
                if st.registry.get(&tk).is_some_and(|r| r.is_custom()) {
                    st.registry.remove(&tk);
                    st.store.remove_type(&tk);
                }
                if let Some(current) = st.store.get(&crd_key, "", meta(&crd, "name")) {
                    self.remove_finalizer(st, &crd_key, &current, CRD_CLEANUP_FINALIZER);
                }
            }
        }
    }

    fn namespace_defaults(&self, st: &mut State) {
        let ns_key = key("", "namespaces");
        let active: Vec<String> = st
            .store
            .type_store(&ns_key)
            .map(|ts| {
                ts.objects()
                    .values()
                    .filter(|n| !deleting(n))
                    .map(|n| meta(n, "name").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let sa_key = key("", "serviceaccounts");
        let cm_key = key("", "configmaps");
        let ca = self.ca_pem();
        for ns in active {
            if st.store.get(&sa_key, &ns, "default").is_none()
                && let Some(t) = Self::target_for(st, &sa_key)
            {
                let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
                let _ = self.create_locked(
                    st,
                    &t,
                    Some(&ns),
                    sa,
                    &WriteOptions::default(),
                    CONTROLLER_MANAGER,
                );
            }
            if let Some(ca) = &ca
                && st.store.get(&cm_key, &ns, "kube-root-ca.crt").is_none()
                && let Some(t) = Self::target_for(st, &cm_key)
            {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}}, "data": {"ca.crt": ca}});
                let _ = self.create_locked(
                    st,
                    &t,
                    Some(&ns),
                    cm,
                    &WriteOptions::default(),
                    CONTROLLER_MANAGER,
                );
            }
        }
    }

    fn token_secrets(&self, st: &mut State) {
        let secret_key = key("", "secrets");
        let sa_key = key("", "serviceaccounts");
        let secrets: Vec<Arc<Value>> = st
            .store
            .type_store(&secret_key)
            .map(|ts| {
                ts.objects()
                    .values()
                    .filter(|s| s["type"] == SA_TOKEN_SECRET_TYPE && !deleting(s))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let ca = self.ca_pem();
        for secret in secrets {
            let ns = meta(&secret, "namespace").to_owned();
            let Some(sa_name) = secret["metadata"]["annotations"][SA_NAME_ANNOTATION]
                .as_str()
                .map(str::to_owned)
            else {
                continue;
            };
            let recorded_uid = secret["metadata"]["annotations"][SA_UID_ANNOTATION]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let sa = st.store.get(&sa_key, &ns, &sa_name);
            let sa_uid = sa.as_ref().map(|s| meta(s, "uid").to_owned());
            match sa_uid {
                None if !recorded_uid.is_empty() => {
                    // The ServiceAccount is gone: its token Secret goes too.
                    let name = meta(&secret, "name").to_owned();
                    self.delete_system(st, &secret_key, &ns, &name, Propagation::Background);
                }
                Some(uid) if !recorded_uid.is_empty() && recorded_uid != uid => {
                    let name = meta(&secret, "name").to_owned();
                    self.delete_system(st, &secret_key, &ns, &name, Propagation::Background);
                }
                Some(uid) if secret["data"]["token"].as_str().is_none_or(str::is_empty) => {
                    let token = match self.authenticator().mint_service_account_token(
                        &ns,
                        &sa_name,
                        &uid,
                        &[],
                        None,
                    ) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(cluster = self.name(), error = %e, "Minting a ServiceAccount token failed");
                            continue;
                        }
                    };
                    let mut updated = (*secret).clone();
                    if !updated["data"].is_object() {
                        updated["data"] = json!({});
                    }
                    updated["data"]["token"] = json!(STANDARD.encode(token));
                    updated["data"]["namespace"] = json!(STANDARD.encode(&ns));
                    if let Some(ca) = &ca {
                        updated["data"]["ca.crt"] = json!(STANDARD.encode(ca));
                    }
                    updated["metadata"]["annotations"][SA_UID_ANNOTATION] = json!(uid);
                    self.system_put(st, &secret_key, updated);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_server::{ApiServerConfig, ListOptions};
    use crate::auth::Authenticator;

    fn api() -> Arc<ApiServer> {
        ApiServer::new(ApiServerConfig {
            name: "test".into(),
            watch_history: 100,
            max_object_bytes: 1024 * 1024,
            authenticator: Arc::new(Authenticator::new(
                "admin",
                b"0123456789abcdef0123456789abcdef",
            )),
        })
    }

    fn settle(api: &ApiServer) {
        let mut st = api.lock();
        api.reconcile_locked(&mut st);
    }

    fn cm(name: &str, owner: Option<(&str, &str, bool)>) -> Value {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}});
        if let Some((oname, uid, block)) = owner {
            o["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": oname, "uid": uid, "blockOwnerDeletion": block}]);
        }
        o
    }

    fn exists(api: &ApiServer, name: &str) -> bool {
        api.get_object("v1", "ConfigMap", Some("default"), name)
            .is_ok()
    }

    #[test]
    fn background_deletion_collects_dependents_by_uid() {
        let api = api();
        let owner = api.create_object(cm("owner", None)).unwrap();
        let uid = owner["metadata"]["uid"].as_str().unwrap().to_owned();
        api.create_object(cm("child", Some(("owner", &uid, false))))
            .unwrap();
        // Same owner name, wrong uid: not a dependent of this owner (and collected as orphaned).
        api.create_object(cm("stranger", Some(("owner", "other-uid", false))))
            .unwrap();
        settle(&api);
        assert!(!exists(&api, "stranger"));
        assert!(exists(&api, "child"));
        api.delete_object(
            "v1",
            "ConfigMap",
            Some("default"),
            "owner",
            &DeleteOptions::default(),
        )
        .unwrap();
        settle(&api);
        assert!(!exists(&api, "child"));
    }

    #[test]
    fn foreground_deletion_waits_for_blocking_dependents() {
        let api = api();
        let owner = api.create_object(cm("owner", None)).unwrap();
        let uid = owner["metadata"]["uid"].as_str().unwrap().to_owned();
        let mut child = cm("child", Some(("owner", &uid, true)));
        child["metadata"]["finalizers"] = json!(["example.com/hold"]);
        api.create_object(child).unwrap();
        let opts = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            ..Default::default()
        };
        let out = api
            .delete_object("v1", "ConfigMap", Some("default"), "owner", &opts)
            .unwrap();
        assert!(!out.deleted);
        settle(&api);
        let owner = api
            .get_object("v1", "ConfigMap", Some("default"), "owner")
            .unwrap();
        assert_eq!(
            owner["metadata"]["finalizers"],
            json!([FOREGROUND_FINALIZER])
        );
        let child = api
            .get_object("v1", "ConfigMap", Some("default"), "child")
            .unwrap();
        assert!(child["metadata"]["deletionTimestamp"].is_string());
        // Release the child: both go.
        let mut child = child;
        child["metadata"]["finalizers"] = json!([]);
        api.update_object(child).unwrap();
        settle(&api);
        assert!(!exists(&api, "child"));
        assert!(!exists(&api, "owner"));
    }

    #[test]
    fn orphan_deletion_keeps_dependents_without_the_reference() {
        let api = api();
        let owner = api.create_object(cm("owner", None)).unwrap();
        let uid = owner["metadata"]["uid"].as_str().unwrap().to_owned();
        api.create_object(cm("child", Some(("owner", &uid, true))))
            .unwrap();
        let opts = DeleteOptions {
            propagation: Some(Propagation::Orphan),
            ..Default::default()
        };
        api.delete_object("v1", "ConfigMap", Some("default"), "owner", &opts)
            .unwrap();
        settle(&api);
        assert!(!exists(&api, "owner"));
        let child = api
            .get_object("v1", "ConfigMap", Some("default"), "child")
            .unwrap();
        assert!(child["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn namespace_deletion_removes_contents_then_the_namespace() {
        let api = api();
        api.create_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .unwrap();
        settle(&api);
        assert!(
            api.get_object("v1", "ServiceAccount", Some("team"), "default")
                .is_ok()
        );
        api.create_object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team", "finalizers": ["example.com/x"]}})).unwrap();
        api.delete_object("v1", "Namespace", None, "team", &DeleteOptions::default())
            .unwrap();
        settle(&api);
        let ns = api.get_object("v1", "Namespace", None, "team").unwrap();
        assert_eq!(ns["status"]["phase"], "Terminating");
        let err = api.create_object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": "team"}})).unwrap_err();
        assert_eq!(err.code(), 403);
        let mut c = api
            .get_object("v1", "ConfigMap", Some("team"), "c")
            .unwrap();
        c["metadata"]["finalizers"] = json!([]);
        api.update_object(c).unwrap();
        settle(&api);
        assert!(
            api.get_object("v1", "Namespace", None, "team")
                .unwrap_err()
                .is_not_found()
        );
        let sas = api
            .list_objects(
                "v1",
                "ServiceAccount",
                Some("team"),
                &ListOptions::default(),
            )
            .unwrap();
        assert_eq!(sas["items"], json!([]));
    }

    #[test]
    fn in_process_apply_creates_then_updates() {
        let api = api();
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": "default"}, "data": {"a": "1"}});
        let created = api.apply_object(&obj, "sim", false).unwrap();
        assert_eq!(created["metadata"]["managedFields"][0]["manager"], "sim");
        let mut changed = obj.clone();
        changed["data"]["a"] = json!("2");
        let updated = api.apply_object(&changed, "sim", false).unwrap();
        assert_eq!(updated["data"]["a"], "2");
        let mut w = api
            .watch_objects(
                "v1",
                "ConfigMap",
                Some("default"),
                &crate::api_server::WatchOptions::default(),
            )
            .unwrap();
        let first = futures::executor::block_on(futures::StreamExt::next(&mut w)).unwrap();
        assert_eq!(first.kind, "ADDED");
    }

    #[test]
    fn token_secrets_get_a_token_for_their_service_account() {
        let api = api();
        api.set_ca_pem("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
        api.create_object(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot", "namespace": "default"}})).unwrap();
        api.create_object(json!({"apiVersion": "v1", "kind": "Secret", "type": SA_TOKEN_SECRET_TYPE, "metadata": {"name": "robot-token", "namespace": "default", "annotations": {SA_NAME_ANNOTATION: "robot"}}})).unwrap();
        settle(&api);
        let s = api
            .get_object("v1", "Secret", Some("default"), "robot-token")
            .unwrap();
        let token = STANDARD
            .decode(s["data"]["token"].as_str().unwrap())
            .unwrap();
        let token = String::from_utf8(token).unwrap();
        let user = api
            .authenticator()
            .authenticate(Some(&token), None)
            .unwrap();
        assert_eq!(user.username, "system:serviceaccount:default:robot");
        assert!(s["data"]["ca.crt"].is_string());
        api.delete_object(
            "v1",
            "ServiceAccount",
            Some("default"),
            "robot",
            &DeleteOptions::default(),
        )
        .unwrap();
        settle(&api);
        assert!(
            api.get_object("v1", "Secret", Some("default"), "robot-token")
                .unwrap_err()
                .is_not_found()
        );
    }
}
