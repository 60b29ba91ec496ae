//! Resource types the server knows: the built-in ones and those defined by CRDs.
//!
//! A [`ResourceType`] is everything the generic handlers need to serve one resource: its names
//! (for routing and discovery), scope, subresources, name rules and, for custom resources, the
//! per-version schemas and printer columns. Storage stays generic: objects are JSON values.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// Every verb a regular resource supports.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// How object names of a resource are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most resources).
    Subdomain,
    /// DNS-1123 label (namespaces).
    Label,
    /// DNS-1035 label (services: must start with a letter).
    Label1035,
    /// Any path segment (RBAC objects: no `/`, `%`, not `.` or `..`).
    PathSegment,
    /// `<plural>.<group>` (CustomResourceDefinitions), checked by the CRD logic.
    Crd,
}

/// Where a `scale` subresource reads and writes replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    /// JSON path of the desired replicas, e.g. `.spec.replicas`.
    pub spec_replicas_path: String,
    /// JSON path of the observed replicas, e.g. `.status.replicas`.
    pub status_replicas_path: String,
    /// JSON path of the label selector string, if any.
    pub label_selector_path: Option<String>,
}

/// Custom-resource specifics of a type defined by a CRD.
#[derive(Debug, Clone, Default)]
pub struct CrdInfo {
    /// The CRD's uid (objects of a recreated CRD are a different type).
    pub uid: String,
    /// `openAPIV3Schema` per served version, interned process-wide (see [`crate::intern`]):
    /// clusters with the same CRD share one immutable copy.
    pub schemas: BTreeMap<String, Arc<Value>>,
    /// `additionalPrinterColumns` per served version.
    pub printer_columns: BTreeMap<String, Vec<Value>>,
    /// `selectableFields` (JSON paths usable in field selectors) per served version.
    pub selectable_fields: BTreeMap<String, Vec<String>>,
}

/// Decodes a built-in object as its typed struct and encodes it back: the error is the decoding
/// message, the result shows which fields the type knows (k8s-openapi ignores unknown ones).
pub type TypedCheck = fn(&Value) -> Result<Value, String>;

/// One resource type (all served versions of it).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group; `""` for core.
    pub group: String,
    /// Served versions, preferred first.
    pub versions: Vec<String>,
    /// The version objects are stored in (custom resources use conversion `None`, so every
    /// version stores the same JSON; only `apiVersion` changes on the way out).
    pub storage_version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// List kind, e.g. `DeploymentList`.
    pub list_kind: String,
    /// Plural resource name used in URLs.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl (`deploy`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Verbs on the main resource.
    pub verbs: Vec<String>,
    /// Whether a `status` subresource exists (status is then ignored on main-resource writes).
    pub status: bool,
    /// The `scale` subresource, if any.
    pub scale: Option<ScaleSpec>,
    /// Other subresources served (discovery only lists them), e.g. `token`, `log`, `finalize`.
    pub extra_subresources: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    /// How names are validated.
    pub name_rule: NameRule,
    /// Whether a create resets `status` (kube-apiserver's PrepareForCreate for most types with a
    /// status subresource; Nodes keep what the kubelet posts).
    pub reset_status_on_create: bool,
    /// Whether strategic merge patch is supported (built-in types only).
    pub strategic: bool,
    /// Whether DELETE answers with the object (custom resources, pods) or a success `Status`.
    pub return_deleted_object: bool,
    /// Whether PUT of an unconditional update (no resourceVersion) is allowed.
    pub unconditional_update: bool,
    /// Whether PUT of a missing object creates it (leases, endpoints, events).
    pub create_on_update: bool,
    /// Checks a built-in object decodes as its typed struct; the error is a decoding message.
    pub typed_check: Option<TypedCheck>,
    /// Custom-resource information; `None` for built-in types.
    pub crd: Option<CrdInfo>,
}

impl ResourceType {
    /// `group/version` (or just `version` for core).
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether `version` is served.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// The storage key of this type.
    pub fn key(&self) -> TypeKey {
        TypeKey {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    /// Whether this is a custom resource.
    pub fn is_custom(&self) -> bool {
        self.crd.is_some()
    }

    /// The CRD schema of `version`, if any.
    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.crd
            .as_ref()
            .and_then(|c| c.schemas.get(version))
            .map(|s| &**s)
    }
}

/// Identifies a stored resource type: group + plural resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeKey {
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
}

/// The set of resource types currently served.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<TypeKey, Arc<ResourceType>>,
}

impl Registry {
    /// A registry holding the built-in types.
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        for t in builtin_types() {
            r.insert(t);
        }
        r
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, t: ResourceType) {
        self.types.insert(t.key(), Arc::new(t));
    }

    /// Removes a type.
    pub fn remove(&mut self, key: &TypeKey) -> Option<Arc<ResourceType>> {
        self.types.remove(key)
    }

    /// The type stored under `key`.
    pub fn get(&self, key: &TypeKey) -> Option<Arc<ResourceType>> {
        self.types.get(key).cloned()
    }

    /// The type serving `group/version/resource`.
    pub fn by_resource(
        &self,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Option<Arc<ResourceType>> {
        let t = self.types.get(&TypeKey {
            group: group.to_owned(),
            resource: resource.to_owned(),
        })?;
        t.serves(version).then(|| t.clone())
    }

    /// The type serving `kind` in `group/version`.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .values()
            .find(|t| t.group == group && t.kind == kind && t.serves(version))
            .cloned()
    }

    /// All types, ordered by group then resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Groups with their served versions, core first, then built-in groups in a stable order,
    /// then custom groups alphabetically.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            let versions = groups.entry(t.group.clone()).or_default();
            for v in &t.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        for versions in groups.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        let mut out: Vec<(String, Vec<String>)> = groups.into_iter().collect();
        out.sort_by_key(|(g, _)| {
            let builtin = BUILTIN_GROUP_ORDER.iter().position(|b| b == g);
            (builtin.is_none(), builtin.unwrap_or(0), g.clone())
        });
        out
    }
}

const BUILTIN_GROUP_ORDER: &[&str] = &[
    "",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "coordination.k8s.io",
    "rbac.authorization.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
];

/// Kubernetes' version ordering: GA > beta > alpha, higher numbers first (kube's
/// `version.CompareKubeAwareVersionStrings`). Larger is preferred.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (stage, major, num.parse().unwrap_or(0))
}

fn typed<K: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value, String> {
    let typed = serde_json::from_value::<K>(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    check: Option<TypedCheck>,
) -> ResourceType {
    ResourceType {
        group: group.to_owned(),
        versions: vec![version.to_owned()],
        storage_version: version.to_owned(),
        kind: kind.to_owned(),
        list_kind: format!("{kind}List"),
        plural: plural.to_owned(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| (*s).to_owned()).collect(),
        categories: Vec::new(),
        verbs: ALL_VERBS.iter().map(|s| (*s).to_owned()).collect(),
        status,
        scale: None,
        extra_subresources: Vec::new(),
        name_rule: NameRule::Subdomain,
        reset_status_on_create: status,
        strategic: true,
        return_deleted_object: false,
        unconditional_update: true,
        create_on_update: matches!(plural, "leases" | "endpoints" | "events"),
        typed_check: check,
        crd: None,
    }
}

fn replicas_scale() -> Option<ScaleSpec> {
    Some(ScaleSpec {
        spec_replicas_path: ".spec.replicas".into(),
        status_replicas_path: ".status.replicas".into(),
        label_selector_path: Some(".status.selector".into()),
    })
}

/// The built-in resource types.
pub fn builtin_types() -> Vec<ResourceType> {
    use k8s_openapi::api::{
        admissionregistration::v1 as adm, apps::v1 as apps, coordination::v1 as coord,
        core::v1 as core, events::v1 as events, rbac::v1 as rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    let all = vec!["all".to_owned()];
    let mut out = Vec::new();

    let mut ns = builtin(
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        &["ns"],
        true,
        Some(typed::<core::Namespace>),
    );
    ns.name_rule = NameRule::Label;
    ns.extra_subresources = vec![("finalize", "Namespace", vec!["update"])];
    out.push(ns);
    out.push(builtin(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        true,
        &["cm"],
        false,
        Some(typed::<core::ConfigMap>),
    ));
    out.push(builtin(
        "",
        "v1",
        "Secret",
        "secrets",
        true,
        &[],
        false,
        Some(typed::<core::Secret>),
    ));
    let mut sa = builtin(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        false,
        Some(typed::<core::ServiceAccount>),
    );
    sa.extra_subresources = vec![("token", "TokenRequest", vec!["create"])];
    out.push(sa);
    let mut svc = builtin(
        "",
        "v1",
        "Service",
        "services",
        true,
        &["svc"],
        true,
        Some(typed::<core::Service>),
    );
    svc.name_rule = NameRule::Label1035;
    svc.categories = all.clone();
    out.push(svc);
    let mut node = builtin(
        "",
        "v1",
        "Node",
        "nodes",
        false,
        &["no"],
        true,
        Some(typed::<core::Node>),
    );
    node.reset_status_on_create = false;
    out.push(node);
    let mut pod = builtin(
        "",
        "v1",
        "Pod",
        "pods",
        true,
        &["po"],
        true,
        Some(typed::<core::Pod>),
    );
    pod.categories = all.clone();
    pod.return_deleted_object = true;
    pod.extra_subresources = vec![("log", "Pod", vec!["get"])];
    out.push(pod);
    out.push(builtin(
        "",
        "v1",
        "Event",
        "events",
        true,
        &["ev"],
        false,
        Some(typed::<core::Event>),
    ));
    out.push(builtin(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        true,
        &["ep"],
        false,
        Some(typed::<core::Endpoints>),
    ));
    let mut pvc = builtin(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        true,
        Some(typed::<core::PersistentVolumeClaim>),
    );
    pvc.reset_status_on_create = true;
    out.push(pvc);

    let mut ev2 = builtin(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        true,
        &["ev"],
        false,
        Some(typed::<events::Event>),
    );
    ev2.strategic = true;
    out.push(ev2);

    for (kind, plural, short, scale) in [
        ("Deployment", "deployments", "deploy", true),
        ("DaemonSet", "daemonsets", "ds", false),
        ("StatefulSet", "statefulsets", "sts", true),
        ("ReplicaSet", "replicasets", "rs", true),
    ] {
        let check: TypedCheck = match kind {
            "Deployment" => typed::<apps::Deployment>,
            "DaemonSet" => typed::<apps::DaemonSet>,
            "StatefulSet" => typed::<apps::StatefulSet>,
            _ => typed::<apps::ReplicaSet>,
        };
        let mut t = builtin(
            "apps",
            "v1",
            kind,
            plural,
            true,
            &[short],
            true,
            Some(check),
        );
        t.categories = all.clone();
        if scale {
            t.scale = replicas_scale();
        }
        out.push(t);
    }
    out.push(builtin(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
        &[],
        false,
        Some(typed::<apps::ControllerRevision>),
    ));
    out.push(builtin(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        false,
        Some(typed::<coord::Lease>),
    ));

    for (kind, plural, namespaced) in [
        ("Role", "roles", true),
        ("RoleBinding", "rolebindings", true),
        ("ClusterRole", "clusterroles", false),
        ("ClusterRoleBinding", "clusterrolebindings", false),
    ] {
        let check: TypedCheck = match kind {
            "Role" => typed::<rbac::Role>,
            "RoleBinding" => typed::<rbac::RoleBinding>,
            "ClusterRole" => typed::<rbac::ClusterRole>,
            _ => typed::<rbac::ClusterRoleBinding>,
        };
        let mut t = builtin(
            "rbac.authorization.k8s.io",
            "v1",
            kind,
            plural,
            namespaced,
            &[],
            false,
            Some(check),
        );
        t.name_rule = NameRule::PathSegment;
        out.push(t);
    }

    for (kind, plural, check) in [
        (
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            typed::<adm::ValidatingWebhookConfiguration> as TypedCheck,
        ),
        (
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            typed::<adm::MutatingWebhookConfiguration>,
        ),
        (
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            typed::<adm::ValidatingAdmissionPolicy>,
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            typed::<adm::ValidatingAdmissionPolicyBinding>,
        ),
    ] {
        let mut t = builtin(
            "admissionregistration.k8s.io",
            "v1",
            kind,
            plural,
            false,
            &[],
            kind == "ValidatingAdmissionPolicy",
            Some(check),
        );
        t.categories = vec!["api-extensions".into()];
        out.push(t);
    }

    let mut crd = builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
        Some(typed::<apiext::CustomResourceDefinition>),
    );
    crd.name_rule = NameRule::Crd;
    crd.categories = vec!["api-extensions".into()];
    // CRD status is computed by the server (conditions, acceptedNames) right after create.
    crd.strategic = false;
    out.push(crd);

    // Create-only review resources kubectl uses (`kubectl auth can-i`, `kubectl auth whoami`).
    for (group, kind, plural) in [
        (
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
        ),
        (
            "authorization.k8s.io",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
        ),
        (
            "authentication.k8s.io",
            "SelfSubjectReview",
            "selfsubjectreviews",
        ),
        ("authentication.k8s.io", "TokenReview", "tokenreviews"),
    ] {
        let mut t = builtin(group, "v1", kind, plural, false, &[], false, None);
        t.verbs = vec!["create".into()];
        out.push(t);
    }
    out
}

/// core/v1 Event → events.k8s.io/v1 Event (kube-apiserver's conversion; both are one resource).
pub fn core_event_to_events_v1(e: &Value) -> Value {
    let mut out = serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": e["metadata"]});
    let copy = |out: &mut Value, from: &str, to: &str| {
        if !e[from].is_null() {
            out[to] = e[from].clone();
        }
    };
    copy(&mut out, "involvedObject", "regarding");
    copy(&mut out, "message", "note");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "related", "related");
    copy(&mut out, "series", "series");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "source", "deprecatedSource");
    copy(&mut out, "firstTimestamp", "deprecatedFirstTimestamp");
    copy(&mut out, "lastTimestamp", "deprecatedLastTimestamp");
    copy(&mut out, "count", "deprecatedCount");
    out["reportingController"] = e["reportingComponent"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or(e["source"]["component"].as_str())
        .map(Value::from)
        .unwrap_or(Value::Null);
    if out["reportingInstance"].is_null() && !e["source"]["host"].is_null() {
        out["reportingInstance"] = e["source"]["host"].clone();
    }
    out["eventTime"] = match e["eventTime"].as_str() {
        Some(t) => Value::from(t),
        None => e["firstTimestamp"]
            .as_str()
            .or(e["metadata"]["creationTimestamp"].as_str())
            .map(|t| Value::from(t.replace('Z', ".000000Z")))
            .unwrap_or(Value::Null),
    };
    if let Some(m) = out.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    out
}

/// events.k8s.io/v1 Event → core/v1 Event.
pub fn events_v1_to_core_event(e: &Value) -> Value {
    let mut out =
        serde_json::json!({"apiVersion": "v1", "kind": "Event", "metadata": e["metadata"]});
    let copy = |out: &mut Value, from: &str, to: &str| {
        if !e[from].is_null() {
            out[to] = e[from].clone();
        }
    };
    copy(&mut out, "regarding", "involvedObject");
    copy(&mut out, "note", "message");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "related", "related");
    copy(&mut out, "series", "series");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "reportingController", "reportingComponent");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "deprecatedSource", "source");
    copy(&mut out, "deprecatedFirstTimestamp", "firstTimestamp");
    copy(&mut out, "deprecatedLastTimestamp", "lastTimestamp");
    copy(&mut out, "deprecatedCount", "count");
    if out["source"].is_null() && !e["reportingController"].is_null() {
        out["source"] = serde_json::json!({"component": e["reportingController"]});
        if !e["reportingInstance"].is_null() {
            out["source"]["host"] = e["reportingInstance"].clone();
        }
    }
    if out["involvedObject"].is_null() {
        out["involvedObject"] = serde_json::json!({});
    }
    out
}

/// Builds the resource type a CRD defines, or explains why the CRD cannot be served.
pub fn crd_type(crd: &Value) -> Result<ResourceType, String> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .ok_or("spec.names.plural: Required value")?;
    let kind = names["kind"]
        .as_str()
        .ok_or("spec.names.kind: Required value")?;
    let singular = names["singular"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = names["listKind"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{kind}List"));
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"]
        .as_array()
        .ok_or("spec.versions: Required value")?;
    let mut served = Vec::new();
    let mut storage = None;
    let mut info = CrdInfo {
        uid: crd["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        ..CrdInfo::default()
    };
    let mut status = false;
    let mut scale = None;
    for v in versions {
        let name = v["name"]
            .as_str()
            .ok_or("spec.versions[].name: Required value")?;
        if v["storage"].as_bool() == Some(true) {
            storage = Some(name.to_owned());
        }
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        served.push(name.to_owned());
        let schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .or_else(|| spec.pointer("/validation/openAPIV3Schema").cloned())
            .unwrap_or(Value::Null);
        info.schemas
            .insert(name.to_owned(), crate::intern::intern(schema));
        let cols = v["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        info.printer_columns.insert(name.to_owned(), cols);
        let selectable = v["selectableFields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["jsonPath"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        info.selectable_fields.insert(name.to_owned(), selectable);
        let sub = &v["subresources"];
        if sub.get("status").is_some() {
            status = true;
        }
        if let Some(s) = sub.get("scale") {
            scale = Some(ScaleSpec {
                spec_replicas_path: s["specReplicasPath"]
                    .as_str()
                    .unwrap_or(".spec.replicas")
                    .to_owned(),
                status_replicas_path: s["statusReplicasPath"]
                    .as_str()
                    .unwrap_or(".status.replicas")
                    .to_owned(),
                label_selector_path: s["labelSelectorPath"].as_str().map(str::to_owned),
            });
        }
    }
    served.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    let storage_version = storage
        .or_else(|| served.first().cloned())
        .ok_or("spec.versions: must have exactly one version marked as storage version")?;
    let mut categories = strs(&names["categories"]);
    categories.dedup();
    Ok(ResourceType {
        group: group.to_owned(),
        versions: served,
        storage_version,
        kind: kind.to_owned(),
        list_kind,
        plural: plural.to_owned(),
        singular,
        namespaced,
        short_names: strs(&names["shortNames"]),
        categories,
        verbs: ALL_VERBS.iter().map(|s| (*s).to_owned()).collect(),
        status,
        scale,
        extra_subresources: Vec::new(),
        name_rule: NameRule::Subdomain,
        reset_status_on_create: status,
        strategic: false,
        return_deleted_object: true,
        unconditional_update: false,
        create_on_update: false,
        typed_check: None,
        crd: Some(info),
    })
}

/// Why `name` is not a valid object name under `rule`, as kube-apiserver words it.
pub fn name_error(rule: NameRule, name: &str) -> Option<String> {
    fn label_ok(s: &str, first_alpha: bool) -> bool {
        segment_ok(s, first_alpha) && s.len() <= 63
    }
    fn segment_ok(s: &str, first_alpha: bool) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && (!first_alpha || b[0].is_ascii_lowercase())
    }
    const SUB: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    const L1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    match rule {
        NameRule::Subdomain | NameRule::Crd => {
            if name.len() > 253 {
                return Some("must be no more than 253 characters".into());
            }
            (!name.split('.').all(|l| segment_ok(l, false))).then(|| SUB.to_owned())
        }
        NameRule::Label => {
            if name.len() > 63 {
                return Some("must be no more than 63 characters".into());
            }
            (!label_ok(name, false)).then(|| LABEL.to_owned())
        }
        NameRule::Label1035 => {
            if name.len() > 63 {
                return Some("must be no more than 63 characters".into());
            }
            (!label_ok(name, true)).then(|| L1035.to_owned())
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                Some(format!("may not be '{name}'"))
            } else if name.contains('/') {
                Some("may not contain '/'".into())
            } else if name.contains('%') {
                Some("may not contain '%'".into())
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_rules() {
        assert!(name_error(NameRule::Subdomain, "a.b-c.d").is_none());
        assert!(name_error(NameRule::Subdomain, "A").is_some());
        assert!(name_error(NameRule::Subdomain, "a..b").is_some());
        assert!(name_error(NameRule::Label, "a.b").is_some());
        assert!(name_error(NameRule::Label1035, "1abc").is_some());
        assert!(name_error(NameRule::Label, "1abc").is_none());
        assert!(name_error(NameRule::PathSegment, "system:admin").is_none());
        assert!(name_error(NameRule::Subdomain, &"a".repeat(254)).is_some());
    }

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1beta1", "v1", "v2", "v1beta2"];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(v, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1"]);
    }

    #[test]
    fn crd_type_reads_names_versions_and_subresources() {
        let crd = serde_json::json!({
            "metadata": {"name": "widgets.example.com", "uid": "u1"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}}}
                ]
            }
        });
        let t = crd_type(&crd).unwrap();
        assert_eq!(t.versions, ["v1", "v1alpha1"]);
        assert_eq!(t.storage_version, "v1");
        assert!(t.status);
        assert_eq!(t.scale.unwrap().spec_replicas_path, ".spec.size");
        assert_eq!(t.list_kind, "WidgetList");
        assert_eq!(t.short_names, ["wd"]);
    }

    #[test]
    fn equal_crd_schemas_are_shared_and_updates_stay_private() {
        let crd = |uid: &str, field_type: &str| {
            serde_json::json!({
                "metadata": {"name": "gadgets.example.com", "uid": uid},
                "spec": {
                    "group": "example.com",
                    "names": {"plural": "gadgets", "kind": "Gadget"},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": field_type}}}}}}}]
                }
            })
        };
        // Two clusters installing the same CRD (different uids) share one schema.
        let a = crd_type(&crd("cluster-a", "integer")).unwrap();
        let b = crd_type(&crd("cluster-b", "integer")).unwrap();
        let schema = |t: &ResourceType| t.crd.as_ref().unwrap().schemas["v1"].clone();
        assert!(Arc::ptr_eq(&schema(&a), &schema(&b)));
        // Cluster b updates its CRD: a new schema for b, a's is untouched.
        let b2 = crd_type(&crd("cluster-b", "string")).unwrap();
        assert!(!Arc::ptr_eq(&schema(&a), &schema(&b2)));
        assert_eq!(
            a.schema("v1").unwrap()["properties"]["spec"]["properties"]["size"]["type"],
            "integer"
        );
        assert_eq!(
            b2.schema("v1").unwrap()["properties"]["spec"]["properties"]["size"]["type"],
            "string"
        );
    }
}
