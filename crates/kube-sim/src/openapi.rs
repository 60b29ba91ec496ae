//! OpenAPI v2 and v3 documents for the served resource types.
//!
//! kubectl 1.32 reads `/openapi/v3` (the index) and then the per
//! group-version documents it links (`serverRelativeURL`) for `apply`
//! (strategic merge patch metadata, and whether the server understands the
//! `fieldValidation` query parameter, in which case client-side validation is
//! skipped) and `explain`. What matters to it, and is therefore reproduced:
//! - `components.schemas` entries carrying `x-kubernetes-group-version-kind`
//!   (an array of `{group, version, kind}`) for each kind;
//! - `paths` whose PATCH operation carries `x-kubernetes-group-version-kind`
//!   (a single object), a `fieldValidation` query parameter and a request body
//!   listing the accepted patch content types (strategic merge patch only for
//!   built-in types that support it, never for custom resources);
//! - `x-kubernetes-patch-merge-key`/`x-kubernetes-patch-strategy` and
//!   `x-kubernetes-list-type`/`x-kubernetes-list-map-keys` on list fields.
//!
//! Built-in schemas come from k8s-openapi's `schemars` implementations, CRD
//! schemas from their `openAPIV3Schema`. `/openapi/v2` is the same content as
//! swagger 2.0 JSON (kubectl itself asks for v2 only as protobuf, which this
//! module does not produce).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::patch::{ListKeys, ListType, builtin_list_keys, strategic_supported};

const V3_PREFIX: &str = "#/components/schemas/";
const V2_PREFIX: &str = "#/definitions/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
/// The Kubernetes version the documents claim to describe.
const INFO_VERSION: &str = "v1.32.0";

/// One custom resource version, with the subresources its CRD enables.
#[derive(Debug, Clone, Copy)]
pub struct CrdVersion<'a> {
    /// API group, e.g. `cluster.x-k8s.io`.
    pub group: &'a str,
    /// Version name, e.g. `v1beta2`.
    pub version: &'a str,
    /// Kind, e.g. `Cluster`.
    pub kind: &'a str,
    /// Plural resource name, e.g. `clusters`.
    pub plural: &'a str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// The version's `schema.openAPIV3Schema`.
    pub schema: &'a Value,
    /// `subresources.status` is set.
    pub status: bool,
    /// `subresources.scale` is set.
    pub scale: bool,
}

#[derive(Debug, Clone)]
struct Resource {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
    definition: String,
    status: bool,
    scale: bool,
    strategic: bool,
    builtin: bool,
}

impl Resource {
    /// The document key: `api/v1` or `apis/<group>/<version>`.
    fn gv_path(&self) -> String {
        gv_path(&self.group, &self.version)
    }
}

/// Collects resource types and renders `/openapi/v2` and `/openapi/v3` documents.
///
/// Documents are rendered on demand: [`Self::v3_index`] only hashes the
/// registered types (cheap), [`Self::v3_group_version`] renders one document and
/// [`Self::v2`] is cached until the next `add_*`/`remove_*` call. Registering the
/// built-in types is the expensive part (schema generation): build a base
/// builder once and `clone()` it to add the current CRDs.
#[derive(Debug, Clone)]
pub struct OpenApiBuilder {
    /// Keyed by (group-version path, kind): re-adding a kind replaces it.
    resources: BTreeMap<(String, String), Resource>,
    /// Built-in definitions (v3 `$ref` style), shared by all documents.
    builtin_definitions: BTreeMap<String, Value>,
    /// CRD definitions, keyed like `builtin_definitions`.
    crd_definitions: BTreeMap<String, Value>,
    v2_cache: OnceLock<Arc<Value>>,
}

impl Default for OpenApiBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenApiBuilder {
    /// A builder holding only the shared meta/v1 definitions.
    pub fn new() -> Self {
        let mut b = Self {
            resources: BTreeMap::new(),
            builtin_definitions: BTreeMap::new(),
            crd_definitions: BTreeMap::new(),
            v2_cache: OnceLock::new(),
        };
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        b.merge_definitions::<meta::ObjectMeta>();
        b.merge_definitions::<meta::ListMeta>();
        b.merge_definitions::<meta::Status>();
        b.merge_definitions::<meta::DeleteOptions>();
        b.merge_definitions::<meta::Patch>();
        b.merge_definitions::<meta::WatchEvent<()>>();
        b.merge_definitions::<k8s_openapi::api::autoscaling::v1::Scale>();
        if let Some(scale) = b.builtin_definitions.get_mut(SCALE) {
            set_gvk(scale, "autoscaling", "v1", "Scale");
        }
        annotate_object_meta(&mut b.builtin_definitions);
        b
    }

    /// Registers a built-in type from its k8s-openapi schema. A `/status`
    /// subresource is documented when the type has a `status` field, `/scale`
    /// for the workload kinds that serve it.
    pub fn add_builtin<K: k8s_openapi::Resource + schemars::JsonSchema>(&mut self) -> &mut Self {
        let definition = K::schema_name().into_owned();
        self.merge_definitions::<K>();
        let keys = builtin_list_keys(K::GROUP, K::KIND);
        let mut visited = BTreeSet::new();
        annotate_lists(
            &mut self.builtin_definitions,
            &definition,
            &[],
            &keys,
            &mut visited,
            0,
        );
        let mut has_status = false;
        if let Some(def) = self.builtin_definitions.get_mut(&definition) {
            set_gvk(def, K::GROUP, K::VERSION, K::KIND);
            // k8s-openapi marks `metadata` required (it is not optional in Rust); the
            // apiserver's documents do not.
            if let Some(Value::Array(required)) = def.get_mut("required") {
                required.retain(|r| r != "metadata");
                if required.is_empty() {
                    def.as_object_mut().map(|d| d.remove("required"));
                }
            }
            has_status = def.pointer("/properties/status").is_some();
        }
        let namespaced = std::any::type_name::<K::Scope>().ends_with("NamespaceResourceScope");
        let scale = matches!(
            (K::GROUP, K::KIND),
            ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") | ("", "ReplicationController")
        );
        self.insert(Resource {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            kind: K::KIND.to_string(),
            plural: K::URL_PATH_SEGMENT.to_string(),
            namespaced,
            definition,
            status: has_status,
            scale,
            strategic: strategic_supported(K::GROUP, K::KIND),
            builtin: true,
        });
        self
    }

    /// Registers one served version of a CRD without subresources.
    pub fn add_crd_version(
        &mut self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        schema: &Value,
    ) -> &mut Self {
        self.add_crd(CrdVersion {
            group,
            version,
            kind,
            plural,
            namespaced,
            schema,
            status: false,
            scale: false,
        })
    }

    /// Registers one served version of a CRD, replacing an earlier registration
    /// of the same group/version/kind.
    pub fn add_crd(&mut self, crd: CrdVersion<'_>) -> &mut Self {
        let definition = format!("{}.{}.{}", reverse_domain(crd.group), crd.version, crd.kind);
        self.crd_definitions.insert(
            definition.clone(),
            crd_definition(crd.group, crd.version, crd.kind, crd.schema),
        );
        self.insert(Resource {
            group: crd.group.to_string(),
            version: crd.version.to_string(),
            kind: crd.kind.to_string(),
            plural: crd.plural.to_string(),
            namespaced: crd.namespaced,
            definition,
            status: crd.status,
            scale: crd.scale,
            strategic: false,
            builtin: false,
        });
        self
    }

    /// Forgets a kind (e.g. when a CRD version stops being served).
    pub fn remove_kind(&mut self, group: &str, version: &str, kind: &str) -> &mut Self {
        if let Some(r) = self
            .resources
            .remove(&(gv_path(group, version), kind.to_string()))
            && !r.builtin
        {
            self.crd_definitions.remove(&r.definition);
        }
        self.v2_cache = OnceLock::new();
        self
    }

    /// The swagger 2.0 document served at `/openapi/v2`.
    pub fn v2(&self) -> Value {
        (**self.v2_cache.get_or_init(|| Arc::new(self.render_v2()))).clone()
    }

    /// The index served at `/openapi/v3`:
    /// `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"}, …}}`.
    pub fn v3_index(&self) -> Value {
        let paths: Map<String, Value> = self
            .by_gv()
            .iter()
            .map(|(path, resources)| {
                let hash = self.gv_hash(resources);
                (
                    path.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
                )
            })
            .collect();
        json!({ "paths": paths })
    }

    /// The document for `path` (`api/v1`, `apis/apps/v1`; a leading `/`, an
    /// `openapi/v3/` prefix and a `?hash=` query are tolerated), served at
    /// `/openapi/v3/<path>`.
    pub fn v3_group_version(&self, path: &str) -> Option<Value> {
        let by_gv = self.by_gv();
        by_gv.get(gv_key(path)).map(|rs| self.render_v3(rs))
    }

    /// The content hash of a group-version document: its `?hash=` in the index,
    /// and a good `ETag`. It only changes when the registered types change.
    pub fn v3_hash(&self, path: &str) -> Option<String> {
        let by_gv = self.by_gv();
        by_gv.get(gv_key(path)).map(|rs| self.gv_hash(rs))
    }

    fn insert(&mut self, r: Resource) {
        self.resources.insert((r.gv_path(), r.kind.clone()), r);
        self.v2_cache = OnceLock::new();
    }

    fn merge_definitions<K: schemars::JsonSchema>(&mut self) {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let _ = generator.subschema_for::<K>();
        for (name, def) in generator.take_definitions(true) {
            self.builtin_definitions.entry(name).or_insert(def);
        }
        self.v2_cache = OnceLock::new();
    }

    fn definition(&self, name: &str) -> Option<&Value> {
        self.crd_definitions
            .get(name)
            .or_else(|| self.builtin_definitions.get(name))
    }

    fn by_gv(&self) -> BTreeMap<String, Vec<&Resource>> {
        let mut by_gv: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
        for r in self.resources.values() {
            by_gv.entry(r.gv_path()).or_default().push(r);
        }
        by_gv
    }

    /// Hashes what a group-version document is rendered from: the resources
    /// and their definitions (built-in definitions are fixed per kind).
    fn gv_hash(&self, resources: &[&Resource]) -> String {
        let mut h = Sha512::new();
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(INFO_VERSION.as_bytes());
        for r in resources {
            let def = if r.builtin {
                Value::Null
            } else {
                self.definition(&r.definition).cloned().unwrap_or_default()
            };
            let input = json!([
                r.group,
                r.version,
                r.kind,
                r.plural,
                r.namespaced,
                r.status,
                r.scale,
                r.strategic,
                r.builtin,
                r.definition,
                def
            ]);
            h.update(input.to_string().as_bytes());
            h.update([0]);
        }
        hex_upper(&h.finalize())
    }

    /// The definitions a group-version document needs, with `roots` first.
    fn roots(resources: &[&Resource]) -> BTreeSet<String> {
        let mut roots: BTreeSet<String> = [STATUS, DELETE_OPTIONS, PATCH, WATCH_EVENT, LIST_META]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for r in resources {
            roots.insert(r.definition.clone());
            if r.scale {
                roots.insert(SCALE.to_string());
            }
        }
        roots
    }

    fn render_v3(&self, resources: &[&Resource]) -> Value {
        let mut paths = Map::new();
        for r in resources {
            resource_paths(r, &mut paths);
        }
        let mut schemas = self.closure(&Self::roots(resources));
        for r in resources {
            schemas.insert(format!("{}List", r.definition), list_definition(r));
        }
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": INFO_VERSION},
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"BearerToken": {
                    "type": "apiKey", "description": "Bearer Token authentication",
                    "name": "authorization", "in": "header"
                }}
            },
            "security": [{"BearerToken": []}]
        })
    }

    fn render_v2(&self) -> Value {
        let mut all_paths = Map::new();
        let all: Vec<&Resource> = self.resources.values().collect();
        for r in &all {
            v2_resource_paths(r, &mut all_paths);
        }
        let mut definitions = Map::new();
        for (k, v) in self.closure(&Self::roots(&all)) {
            definitions.insert(k, to_v2(v));
        }
        for r in &all {
            definitions.insert(format!("{}List", r.definition), to_v2(list_definition(r)));
        }
        json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": INFO_VERSION},
            "paths": all_paths,
            "definitions": definitions,
            "securityDefinitions": {"BearerToken": {
                "type": "apiKey", "description": "Bearer Token authentication",
                "name": "authorization", "in": "header"
            }},
            "security": [{"BearerToken": []}]
        })
    }

    /// The definitions reachable from `roots` through `$ref`s.
    fn closure(&self, roots: &BTreeSet<String>) -> Map<String, Value> {
        let mut out = BTreeMap::new();
        let mut todo: Vec<String> = roots.iter().cloned().collect();
        while let Some(name) = todo.pop() {
            if out.contains_key(&name) {
                continue;
            }
            let Some(def) = self.definition(&name) else {
                continue;
            };
            collect_refs(def, &mut todo);
            out.insert(name, def.clone());
        }
        out.into_iter().collect()
    }
}

/// A self-contained schema of a built-in type (every `$ref` inlined), for
/// [`crate::schema::prune`] to find the unknown fields of built-in objects
/// (`fieldValidation=Strict|Warn`).
///
/// Objects the schema leaves open (`RawExtension`, `FieldsV1`, …) get
/// `x-kubernetes-preserve-unknown-fields`, as do recursive references (only
/// `JSONSchemaProps` has them). Meant for pruning, not for [`crate::schema::validate`]:
/// k8s-openapi schemas lack the enums and formats the apiserver checks in code.
pub fn inline_schema<K: schemars::JsonSchema>() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let root = generator.subschema_for::<K>().to_value();
    let defs: BTreeMap<String, Value> = generator.take_definitions(true).into_iter().collect();
    let mut stack = Vec::new();
    inline(&root, &defs, &mut stack)
}

fn open_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn inline(node: &Value, defs: &BTreeMap<String, Value>, stack: &mut Vec<String>) -> Value {
    let Value::Object(map) = node else {
        return node.clone();
    };
    let target = ref_target(node).map(str::to_string);
    let mut out = Map::new();
    if let Some(name) = target {
        if stack.contains(&name) {
            return open_object();
        }
        let Some(def) = defs.get(&name) else {
            return open_object();
        };
        stack.push(name);
        if let Value::Object(resolved) = inline(def, defs, stack) {
            out = resolved;
        }
        stack.pop();
        // Siblings of the reference (description, default…) win.
        for (k, v) in map {
            if k != "$ref" && k != "allOf" {
                out.insert(k.clone(), v.clone());
            }
        }
        return Value::Object(out);
    }
    for (k, v) in map {
        let value = match k.as_str() {
            "properties" => Value::Object(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(pk, pv)| (pk.clone(), inline(pv, defs, stack)))
                    .collect(),
            ),
            "items" | "additionalProperties" if v.is_object() => inline(v, defs, stack),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| inline(s, defs, stack))
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), value);
    }
    let object_type = out.get("type").and_then(Value::as_str) == Some("object");
    if object_type && !out.contains_key("properties") && !out.contains_key("additionalProperties") {
        out.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
    Value::Object(out)
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3/apis/apps/v1?hash=X` → `apis/apps/v1`.
fn gv_key(path: &str) -> &str {
    let key = path.trim_start_matches('/');
    let key = key.strip_prefix("openapi/v3/").unwrap_or(key);
    key.split('?').next().unwrap_or(key)
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// `cluster.x-k8s.io` → `io.x-k8s.cluster`, the apiserver's definition prefix.
fn reverse_domain(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

fn set_gvk(def: &mut Value, group: &str, version: &str, kind: &str) {
    if let Some(obj) = def.as_object_mut() {
        obj.insert(
            "x-kubernetes-group-version-kind".to_string(),
            json!([{"group": group, "kind": kind, "version": version}]),
        );
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{V3_PREFIX}{name}")})
}

/// The name a `$ref` (plain or wrapped in a one-element `allOf`) points to.
fn ref_target(v: &Value) -> Option<&str> {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        return r.strip_prefix(V3_PREFIX);
    }
    v.get("allOf")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|f| f.get("$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(V3_PREFIX))
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "$ref"
                    && let Some(name) = child.as_str().and_then(|r| r.strip_prefix(V3_PREFIX))
                {
                    out.push(name.to_string());
                } else {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

/// Swagger 2.0 form of a v3 schema: `#/definitions/` refs, and no keywords
/// swagger 2.0 lacks (the apiserver drops them from its v2 document too).
fn to_v2(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "nullable" | "anyOf" | "oneOf" | "not"))
                .map(|(k, child)| {
                    if k == "$ref"
                        && let Some(name) = child.as_str().and_then(|r| r.strip_prefix(V3_PREFIX))
                    {
                        (k, Value::String(format!("{V2_PREFIX}{name}")))
                    } else {
                        (k, to_v2(child))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(to_v2).collect()),
        other => other,
    }
}

/// The published schema of a CRD version: its openAPIV3Schema with the
/// standard apiVersion/kind/metadata and the GVK extension.
fn crd_definition(group: &str, version: &str, kind: &str, schema: &Value) -> Value {
    let mut def = match schema {
        Value::Object(_) => schema.clone(),
        _ => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    };
    if let Some(obj) = def.as_object_mut() {
        obj.entry("type").or_insert_with(|| json!("object"));
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert(
                "apiVersion".to_string(),
                json!({"description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources", "type": "string"}),
            );
            props.insert(
                "kind".to_string(),
                json!({"description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds", "type": "string"}),
            );
            props.insert(
                "metadata".to_string(),
                json!({"description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata", "allOf": [schema_ref(OBJECT_META)]}),
            );
        }
    }
    set_gvk(&mut def, group, version, kind);
    def
}

fn list_definition(r: &Resource) -> Value {
    json!({
        "description": format!("{}List is a list of {}", r.kind, r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "items": {"description": format!("List of {}.", r.plural), "type": "array", "items": schema_ref(&r.definition)},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "metadata": {"description": "Standard list metadata.", "allOf": [schema_ref(LIST_META)]}
        },
        "x-kubernetes-group-version-kind": [{"group": r.group, "kind": format!("{}List", r.kind), "version": r.version}]
    })
}

/// Real ObjectMeta list semantics (k8s-openapi's schemars output lacks them).
fn annotate_object_meta(defs: &mut BTreeMap<String, Value>) {
    let Some(props) = defs
        .get_mut(OBJECT_META)
        .and_then(|d| d.get_mut("properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if let Some(Value::Object(f)) = props.get_mut("finalizers") {
        f.insert("x-kubernetes-list-type".into(), json!("set"));
        f.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
    }
    if let Some(Value::Object(o)) = props.get_mut("ownerReferences") {
        o.insert("x-kubernetes-list-type".into(), json!("map"));
        o.insert("x-kubernetes-list-map-keys".into(), json!(["uid"]));
        o.insert("x-kubernetes-patch-merge-key".into(), json!("uid"));
        o.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
    }
    if let Some(Value::Object(m)) = props.get_mut("managedFields") {
        m.insert("x-kubernetes-list-type".into(), json!("atomic"));
    }
}

/// Adds list-type and patch-merge extensions to the list fields reachable
/// from definition `name`, asking `keys` about each field path.
fn annotate_lists(
    defs: &mut BTreeMap<String, Value>,
    name: &str,
    path: &[String],
    keys: &dyn ListKeys,
    visited: &mut BTreeSet<String>,
    depth: usize,
) {
    // Shared definitions are annotated once per kind; the depth bound guards
    // against recursive types.
    if depth > 16 || !visited.insert(name.to_string()) || name == OBJECT_META {
        return;
    }
    let Some(mut def) = defs.remove(name) else {
        return;
    };
    let mut children: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(props) = def.get_mut("properties").and_then(Value::as_object_mut) {
        for (prop_name, prop) in props.iter_mut() {
            let mut p = path.to_vec();
            p.push(prop_name.clone());
            if prop.get("type").and_then(Value::as_str) == Some("array") {
                let segs: Vec<&str> = p.iter().map(String::as_str).collect();
                if let Some(obj) = prop.as_object_mut() {
                    annotate_list(obj, keys.list_type(&segs), keys.strategic_list_type(&segs));
                }
                if let Some(target) = prop.get("items").and_then(ref_target) {
                    children.push((target.to_string(), p));
                }
            } else if let Some(target) = ref_target(prop) {
                children.push((target.to_string(), p));
            }
        }
    }
    defs.insert(name.to_string(), def);
    for (target, p) in children {
        annotate_lists(defs, &target, &p, keys, visited, depth + 1);
    }
}

fn annotate_list(
    prop: &mut Map<String, Value>,
    apply: Option<ListType>,
    strategic: Option<ListType>,
) {
    match apply {
        Some(ListType::Map(keys)) => {
            prop.insert("x-kubernetes-list-type".into(), json!("map"));
            prop.insert("x-kubernetes-list-map-keys".into(), json!(keys));
        }
        Some(ListType::Set) => {
            prop.insert("x-kubernetes-list-type".into(), json!("set"));
        }
        Some(ListType::Atomic) => {
            prop.insert("x-kubernetes-list-type".into(), json!("atomic"));
        }
        None => {}
    }
    match strategic {
        Some(ListType::Map(keys)) => {
            if let Some(first) = keys.first() {
                prop.insert("x-kubernetes-patch-merge-key".into(), json!(first));
                prop.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            }
        }
        Some(ListType::Set) => {
            prop.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
        }
        Some(ListType::Atomic) | None => {}
    }
}

// === paths ===

fn query_param(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": kind, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

const DRY_RUN: &str = "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed";
const FIELD_MANAGER: &str = "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.";
const FIELD_VALIDATION: &str = "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.";

fn write_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "string", DRY_RUN),
        query_param("fieldManager", "string", FIELD_MANAGER),
        query_param("fieldValidation", "string", FIELD_VALIDATION),
    ]
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| query_param(n, t, &format!("{n} list option")))
    .collect()
}

fn delete_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "string", DRY_RUN),
        query_param(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        query_param(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error.",
        ),
        query_param(
            "orphanDependents",
            "boolean",
            "Deprecated: please use the PropagationPolicy.",
        ),
        query_param(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background', 'Foreground'.",
        ),
    ]
}

fn json_content(schema: Value) -> Value {
    json!({
        "application/json": {"schema": schema.clone()},
        "application/yaml": {"schema": schema.clone()},
        "application/vnd.kubernetes.protobuf": {"schema": schema}
    })
}

fn responses(def: &str, codes: &[&str]) -> Value {
    let mut out = Map::new();
    for code in codes {
        let description = match *code {
            "201" => "Created",
            "202" => "Accepted",
            _ => "OK",
        };
        out.insert(
            code.to_string(),
            json!({"description": description, "content": json_content(schema_ref(def))}),
        );
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

/// `cluster.x-k8s.io` + `v1beta2` → `ClusterXK8sIoV1beta2`, `""` → `CoreV1`.
fn operation_gv(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    let mut out = String::new();
    for part in group
        .split(|c: char| !c.is_ascii_alphanumeric())
        .chain([version])
    {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

struct Op<'a> {
    r: &'a Resource,
    verb: &'static str,
    action: &'static str,
    kind_suffix: &'static str,
    gvk: Value,
    params: Vec<Value>,
    body: Option<Value>,
    response_def: String,
    codes: &'static [&'static str],
}

impl Op<'_> {
    fn render(self) -> Value {
        let ns = if self.r.namespaced && self.kind_suffix != "ForAllNamespaces" {
            "Namespaced"
        } else {
            ""
        };
        let kind_part = if self.kind_suffix == "ForAllNamespaces" {
            format!("{}ForAllNamespaces", self.r.kind)
        } else {
            format!("{}{}", self.r.kind, self.kind_suffix)
        };
        let mut op = json!({
            "tags": [tag(&self.r.group, &self.r.version)],
            "description": format!("{} {}", self.action, self.r.kind),
            "operationId": format!("{}{}{}{}", self.verb, operation_gv(&self.r.group, &self.r.version), ns, kind_part),
            "parameters": self.params,
            "responses": responses(&self.response_def, self.codes),
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk,
        });
        if let (Some(body), Some(obj)) = (self.body, op.as_object_mut()) {
            obj.insert("requestBody".into(), body);
        }
        op
    }
}

fn tag(group: &str, version: &str) -> String {
    let g = if group.is_empty() { "core" } else { group };
    let mut t = g.split('.').next().unwrap_or(g).to_string();
    t.push('_');
    t.push_str(version);
    t
}

fn body_of(def: &str) -> Value {
    json!({"content": {"*/*": {"schema": schema_ref(def)}}, "required": true})
}

fn patch_body(strategic: bool) -> Value {
    let mut content = Map::new();
    let mut types = vec![
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    if strategic {
        types.push("application/strategic-merge-patch+json");
    }
    for t in types {
        content.insert(t.to_string(), json!({"schema": schema_ref(PATCH)}));
    }
    json!({"content": content, "required": true})
}

fn with(mut base: Vec<Value>, extra: Vec<Value>) -> Vec<Value> {
    base.extend(extra);
    base
}

fn resource_paths(r: &Resource, paths: &mut Map<String, Value>) {
    let prefix = format!("/{}", r.gv_path());
    let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
    let pretty = query_param(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    );
    let (collection, common) = if r.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            vec![
                path_param(
                    "namespace",
                    "object name and auth scope, such as for teams and projects",
                ),
                pretty.clone(),
            ],
        )
    } else {
        (format!("{prefix}/{}", r.plural), vec![pretty.clone()])
    };
    let item = format!("{collection}/{{name}}");
    let def = r.definition.clone();
    let list_def = format!("{}List", r.definition);
    let op = |verb, action, suffix, gvk: &Value, params, body, response_def: &str, codes| {
        Op {
            r,
            verb,
            action,
            kind_suffix: suffix,
            gvk: gvk.clone(),
            params,
            body,
            response_def: response_def.to_string(),
            codes,
        }
        .render()
    };
    paths.insert(
        collection.clone(),
        json!({
            "get": op("list", "list", "", &gvk, list_params(), None, &list_def, &["200"]),
            "post": op("create", "post", "", &gvk, write_params(), Some(body_of(&def)), &def, &["200", "201", "202"]),
            "delete": op("delete", "deletecollection", "Collection", &gvk, with(delete_params(), list_params()), Some(body_of(DELETE_OPTIONS)), STATUS, &["200"]),
            "parameters": common,
        }),
    );
    let mut item_common = vec![path_param("name", &format!("name of the {}", r.kind))];
    if r.namespaced {
        item_common.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    item_common.push(pretty.clone());
    let patch_params = with(
        write_params(),
        vec![query_param(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        )],
    );
    paths.insert(
        item.clone(),
        json!({
            "get": op("read", "get", "", &gvk, vec![], None, &def, &["200"]),
            "put": op("replace", "put", "", &gvk, write_params(), Some(body_of(&def)), &def, &["200", "201"]),
            "patch": op("patch", "patch", "", &gvk, patch_params.clone(), Some(patch_body(r.strategic)), &def, &["200", "201"]),
            "delete": op("delete", "delete", "", &gvk, delete_params(), Some(body_of(DELETE_OPTIONS)), STATUS, &["200", "202"]),
            "parameters": item_common.clone(),
        }),
    );
    if r.namespaced {
        paths.insert(
            format!("{prefix}/{}", r.plural),
            json!({
                "get": op("list", "list", "ForAllNamespaces", &gvk, list_params(), None, &list_def, &["200"]),
                "parameters": [pretty.clone()],
            }),
        );
    }
    if r.status {
        paths.insert(
            format!("{item}/status"),
            json!({
                "get": op("read", "get", "Status", &gvk, vec![], None, &def, &["200"]),
                "put": op("replace", "put", "Status", &gvk, write_params(), Some(body_of(&def)), &def, &["200", "201"]),
                "patch": op("patch", "patch", "Status", &gvk, patch_params.clone(), Some(patch_body(r.strategic)), &def, &["200", "201"]),
                "parameters": item_common.clone(),
            }),
        );
    }
    if r.scale {
        let scale_gvk = json!({"group": "autoscaling", "kind": "Scale", "version": "v1"});
        paths.insert(
            format!("{item}/scale"),
            json!({
                "get": op("read", "get", "Scale", &scale_gvk, vec![], None, SCALE, &["200"]),
                "put": op("replace", "put", "Scale", &scale_gvk, write_params(), Some(body_of(SCALE)), SCALE, &["200", "201"]),
                "patch": op("patch", "patch", "Scale", &scale_gvk, patch_params, Some(patch_body(r.strategic)), SCALE, &["200", "201"]),
                "parameters": item_common,
            }),
        );
    }
}

/// The swagger 2.0 paths of a resource (collection and item operations).
fn v2_resource_paths(r: &Resource, paths: &mut Map<String, Value>) {
    let mut v3 = Map::new();
    resource_paths(r, &mut v3);
    for (path, item) in v3 {
        let Value::Object(item) = item else {
            continue;
        };
        let mut out = Map::new();
        for (key, value) in item {
            if key == "parameters" {
                out.insert(
                    key,
                    Value::Array(
                        value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(v2_param)
                            .collect(),
                    ),
                );
                continue;
            }
            let Value::Object(mut op) = value else {
                continue;
            };
            let mut params: Vec<Value> = op
                .remove("parameters")
                .and_then(|p| p.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(v2_param)
                .collect();
            let mut consumes = vec![json!("*/*")];
            if let Some(body) = op.remove("requestBody")
                && let Some(content) = body.get("content").and_then(Value::as_object)
            {
                consumes = content.keys().map(|k| json!(k)).collect();
                if let Some(schema) = content.values().next().and_then(|c| c.get("schema")) {
                    params.insert(0, json!({"name": "body", "in": "body", "required": true, "schema": to_v2(schema.clone())}));
                }
            }
            if let Some(Value::Object(responses)) = op.remove("responses") {
                let converted: Map<String, Value> = responses
                    .into_iter()
                    .map(|(code, resp)| {
                        let mut r = json!({"description": resp.get("description").cloned().unwrap_or(json!(""))});
                        if let Some(schema) = resp.pointer("/content/application~1json/schema") {
                            r["schema"] = to_v2(schema.clone());
                        }
                        (code, r)
                    })
                    .collect();
                op.insert("responses".into(), Value::Object(converted));
            }
            op.insert("parameters".into(), Value::Array(params));
            op.insert("consumes".into(), Value::Array(consumes));
            op.insert(
                "produces".into(),
                json!([
                    "application/json",
                    "application/yaml",
                    "application/vnd.kubernetes.protobuf"
                ]),
            );
            op.insert("schemes".into(), json!(["https"]));
            out.insert(key, Value::Object(op));
        }
        paths.insert(path, Value::Object(out));
    }
}

fn v2_param(p: &Value) -> Value {
    let mut out = p.clone();
    if let Some(obj) = out.as_object_mut()
        && let Some(Value::Object(schema)) = obj.remove("schema")
    {
        for (k, v) in schema {
            obj.insert(k, v);
        }
    }
    out
}

#[cfg(test)]
mod tests;
