//! The HTTP face of [`ApiServer`]: routing, content negotiation, request decoding and responses.
//!
//! Paths follow kube-apiserver: `/api/v1/...` for the core group, `/apis/<group>/<version>/...`
//! otherwise, `[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]`, the legacy `/watch/`
//! prefix, discovery and OpenAPI documents. Request bodies may be JSON, YAML or Kubernetes
//! protobuf; responses are JSON (also when protobuf is acceptable to the client, which every
//! client also accepts JSON), as `Table` or `PartialObjectMetadata[List]` when asked.

pub mod discovery;
pub mod openapi_pb;
pub mod status;
pub mod table;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::api_server::{
    ApiServer, DeleteOptions, FieldValidation, ListOptions, MAX_REQUEST_BYTES, PatchType,
    Propagation, Subresource, Target, WatchOptions, WriteOptions,
};
use crate::auth::UserInfo;
use crate::watch::WatchEvent;
use status::{ApiError, success_status};
use table::IncludeObject;

/// Response body type: full bodies and streaming watches (`Send`, not `Sync`: a watch stream
/// is polled by one connection task).
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// The aggregated discovery media type kubectl asks for.
const AGGREGATED_AS: &str = "APIGroupDiscoveryList";

fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(
    code: u16,
    body: &Value,
    content_type: &str,
    warnings: &[String],
) -> Response<BoxBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// The `Status` response of an error.
pub fn error_response(err: &ApiError) -> Response<BoxBody> {
    json_response(err.code(), &err.to_status(), "application/json", &[])
}

/// Decodes `application/x-www-form-urlencoded` query strings.
fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let mut map = BTreeMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(decode(k), decode(v));
    }
    map
}

/// A parsed `Accept` entry: media type and parameters.
struct MediaRange {
    media: String,
    params: BTreeMap<String, String>,
}

fn parse_accept(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .map(|part| {
            let mut it = part.split(';');
            let media = it.next().unwrap_or_default().trim().to_ascii_lowercase();
            let params = it
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            MediaRange { media, params }
        })
        .collect()
}

/// What shape a GET response takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    Table,
    Metadata,
}

fn negotiate(accept: &str) -> Result<Output, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    let mut plain_ok = false;
    for r in parse_accept(accept) {
        match r.params.get("as").map(String::as_str) {
            Some("Table") if r.params.get("g").is_none_or(|g| g == "meta.k8s.io") => {
                return Ok(Output::Table);
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if r.params.get("g").is_none_or(|g| g == "meta.k8s.io") =>
            {
                return Ok(Output::Metadata);
            }
            Some(_) => {}
            None => {
                if matches!(
                    r.media.as_str(),
                    "application/json"
                        | "*/*"
                        | "application/*"
                        | "application/yaml"
                        | "application/vnd.kubernetes.protobuf"
                        | "application/json;stream=watch"
                        | ""
                ) {
                    plain_ok = true;
                }
            }
        }
    }
    if plain_ok {
        Ok(Output::Json)
    } else {
        Err(ApiError::NotAcceptable(format!(
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf (requested {accept})"
        )))
    }
}

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Version,
    Health,
    Api,
    Apis,
    ApiGroup(String),
    ApiResources(String, String),
    OpenApiV2,
    OpenApiV3,
    OpenApiV3Path(String),
    Resource(ResourcePath),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourcePath {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    sub: Option<String>,
    watch_prefix: bool,
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Some(Route::Health),
        ["openapi", "v2"] => return Some(Route::OpenApiV2),
        ["openapi", "v3"] => return Some(Route::OpenApiV3),
        ["openapi", "v3", rest @ ..] => return Some(Route::OpenApiV3Path(rest.join("/"))),
        ["api"] => return Some(Route::Api),
        ["apis"] => return Some(Route::Apis),
        ["api", v] => return Some(Route::ApiResources(String::new(), (*v).to_owned())),
        ["apis", g] => return Some(Route::ApiGroup((*g).to_owned())),
        ["apis", g, v] => return Some(Route::ApiResources((*g).to_owned(), (*v).to_owned())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (watch_prefix, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let (namespace, rest) = match rest {
        ["namespaces", n, r @ ..]
            if !(r.is_empty()
                || group.is_empty() && r.len() == 1 && matches!(r[0], "status" | "finalize")) =>
        {
            (Some((*n).to_owned()), r)
        }
        r => (None, r),
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some((*n).to_owned()), None),
        [r, n, s] => (*r, Some((*n).to_owned()), Some((*s).to_owned())),
        _ => return None,
    };
    Some(Route::Resource(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        namespace,
        resource: resource.to_owned(),
        name,
        sub,
        watch_prefix,
    }))
}

/// Boolean query parameters: Go's `strconv.ParseBool` accepts these (the Python client sends
/// `True`).
fn truthy(v: Option<&String>) -> bool {
    matches!(
        v.map(String::as_str),
        Some("true" | "1" | "True" | "TRUE" | "t" | "T")
    )
}

fn falsy(v: Option<&String>) -> bool {
    matches!(
        v.map(String::as_str),
        Some("false" | "0" | "False" | "FALSE" | "f" | "F")
    )
}

fn write_options(
    q: &BTreeMap<String, String>,
    parts: &http::request::Parts,
) -> Result<WriteOptions, ApiError> {
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid dryRun value: {other:?}: supported values: \"All\""
            )));
        }
    };
    let field_validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "fieldValidation must be one of Ignore, Warn, Strict; got {other:?}"
            )));
        }
    };
    let field_manager = match q.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => {
            if m.len() > 128 {
                return Err(ApiError::BadRequest(
                    "fieldManager: Too long: may not be longer than 128 characters".into(),
                ));
            }
            Some(m.clone())
        }
        None => {
            // kube-apiserver's default: the user agent up to the first '/'.
            let ua = parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown");
            let m: String = ua
                .split('/')
                .next()
                .unwrap_or("unknown")
                .chars()
                .take(128)
                .collect();
            Some(m)
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_manager,
        field_validation,
        force: truthy(q.get("force")),
    })
}

fn list_options(q: &BTreeMap<String, String>) -> Result<ListOptions, ApiError> {
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid limit: {l}")))?
                .max(0) as usize,
        ),
        None => None,
    };
    Ok(ListOptions {
        label_selector: q.get("labelSelector").cloned(),
        field_selector: q.get("fieldSelector").cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q
            .get("resourceVersionMatch")
            .cloned()
            .filter(|s| !s.is_empty()),
        limit,
        continue_token: q.get("continue").cloned().filter(|s| !s.is_empty()),
    })
}

fn delete_options(
    q: &BTreeMap<String, String>,
    body: Option<&Value>,
) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    let propagation = |s: &str| match s {
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        "Orphan" => Ok(Propagation::Orphan),
        other => Err(ApiError::BadRequest(format!(
            "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
        ))),
    };
    if let Some(b) = body {
        if let Some(g) = b["gracePeriodSeconds"].as_i64() {
            opts.grace_period_seconds = Some(g);
        }
        if let Some(p) = b["propagationPolicy"].as_str() {
            opts.propagation = Some(propagation(p)?);
        } else if let Some(o) = b["orphanDependents"].as_bool() {
            opts.propagation = Some(if o {
                Propagation::Orphan
            } else {
                Propagation::Background
            });
        }
        opts.precondition_uid = b["preconditions"]["uid"].as_str().map(str::to_owned);
        opts.precondition_resource_version = b["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        if b["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d == "All"))
        {
            opts.dry_run = true;
        }
    }
    if let Some(g) = q.get("gracePeriodSeconds").filter(|s| !s.is_empty()) {
        opts.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    if let Some(p) = q.get("propagationPolicy").filter(|s| !s.is_empty()) {
        opts.propagation = Some(propagation(p)?);
    } else if let Some(o) = q.get("orphanDependents").filter(|s| !s.is_empty()) {
        opts.propagation = Some(if o == "true" {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
    }
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => {}
        Some("All") => opts.dry_run = true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "Invalid dryRun value: {other:?}: supported values: \"All\""
            )));
        }
    }
    Ok(opts)
}

fn content_type(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Decodes an object body (JSON, YAML or protobuf).
fn decode_body(ct: &str, body: &[u8], t: &Target) -> Result<Value, ApiError> {
    let bad = |e: String| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            t.rt.kind, t.version, t.rt.kind
        ))
    };
    match ct {
        "application/json" | "" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| bad(e.to_string()))
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let s = std::str::from_utf8(body).map_err(|e| bad(e.to_string()))?;
            serde_saphyr::from_str::<Value>(s).map_err(|e| bad(e.to_string()))
        }
        "application/vnd.kubernetes.protobuf" => decode_protobuf(body).map_err(bad),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
        ))),
    }
}

fn decode_protobuf(body: &[u8]) -> Result<Value, String> {
    crate::protobuf::decode_to_json(body).map_err(|e| e.to_string())
}

fn patch_type(ct: &str) -> Result<PatchType, ApiError> {
    match ct {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"
        ))),
    }
}

async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::RequestEntityTooLarge(format!(
                    "Request entity too large: limit is {MAX_REQUEST_BYTES}"
                )))
            } else {
                Err(ApiError::BadRequest(format!(
                    "reading the request body failed: {e}"
                )))
            }
        }
    }
}

impl ApiServer {
    /// Serves one HTTP request as `user` (already authenticated by the caller; authorization is
    /// not enforced). Never fails: errors become `Status` responses.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>, user: UserInfo) -> Response<BoxBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let method = parts.method.clone();
        let path = parts.uri.path().to_owned();
        let resp = match self.dispatch(&parts, body, &user).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        tracing::debug!(cluster = self.name(), %method, %path, status = resp.status().as_u16(), user = %user.username, "Served request");
        resp
    }

    async fn dispatch<B>(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        body: B,
        user: &UserInfo,
    ) -> Result<Response<BoxBody>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let accept = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let route = route(parts.uri.path()).ok_or(ApiError::NoRoute)?;
        let get_only = |m: &Method| -> Result<(), ApiError> {
            if *m == Method::GET || *m == Method::HEAD {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed(
                    "the server does not allow this method on the requested resource".to_owned(),
                ))
            }
        };
        let ok = |v: &Value| Ok(json_response(200, v, "application/json", &[]));
        match route {
            Route::Version => {
                get_only(&parts.method)?;
                ok(&discovery::version())
            }
            Route::Health => {
                let mut r = Response::new(full("ok"));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Ok(r)
            }
            Route::Api | Route::Apis => {
                get_only(&parts.method)?;
                let legacy = route == Route::Api;
                for r in parse_accept(&accept) {
                    if r.params.get("as").map(String::as_str) == Some(AGGREGATED_AS)
                        && r.params.get("g").map(String::as_str) == Some("apidiscovery.k8s.io")
                        && let Some(v) = r
                            .params
                            .get("v")
                            .filter(|v| matches!(v.as_str(), "v2" | "v2beta1"))
                    {
                        let doc = discovery::aggregated(
                            &self.registry(),
                            legacy,
                            &format!("apidiscovery.k8s.io/{v}"),
                        );
                        let ct = format!(
                            "application/json;g=apidiscovery.k8s.io;v={v};as={AGGREGATED_AS}"
                        );
                        return Ok(json_response(200, &doc, &ct, &[]));
                    }
                }
                if legacy {
                    ok(&discovery::api_versions())
                } else {
                    ok(&discovery::api_group_list(&self.registry()))
                }
            }
            Route::ApiGroup(g) => {
                get_only(&parts.method)?;
                ok(&discovery::api_group(&self.registry(), &g).ok_or(ApiError::NoRoute)?)
            }
            Route::ApiResources(g, v) => {
                get_only(&parts.method)?;
                ok(&discovery::resource_list(&self.registry(), &g, &v).ok_or(ApiError::NoRoute)?)
            }
            Route::OpenApiV2 => {
                get_only(&parts.method)?;
                // JSON when acceptable, else gnostic's protobuf encoding (kubectl's choice).
                let ranges = parse_accept(&accept);
                let json_ok = accept.trim().is_empty()
                    || ranges.iter().any(|r| {
                        matches!(
                            r.media.as_str(),
                            "application/json" | "*/*" | "application/*"
                        )
                    });
                let wants_pb = ranges
                    .first()
                    .is_some_and(|r| r.media == openapi_pb::MEDIA_TYPE);
                if wants_pb || !json_ok {
                    let bytes = openapi_pb::encode_v2(&self.openapi().v2());
                    let mut r = Response::new(full(bytes));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        // Like kube-openapi: the media type itself does not parse as a MIME type.
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    return Ok(r);
                }
                ok(&self.openapi().v2())
            }
            Route::OpenApiV3 => {
                get_only(&parts.method)?;
                ok(&self.openapi().v3_index())
            }
            Route::OpenApiV3Path(p) => {
                get_only(&parts.method)?;
                ok(&self
                    .openapi()
                    .v3_group_version(&p)
                    .ok_or(ApiError::NoRoute)?)
            }
            Route::Resource(rp) => self.resource(parts, body, rp, &accept, user).await,
        }
    }

    /// The OpenAPI documents of the types currently served.
    pub fn openapi(&self) -> crate::openapi::OpenApiBuilder {
        use k8s_openapi::api::{
            admissionregistration::v1 as adm, apps::v1 as apps, coordination::v1 as coord,
            core::v1 as core, events::v1 as events, rbac::v1 as rbac,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
        let mut b = crate::openapi::OpenApiBuilder::new();
        b.add_builtin::<core::Namespace>()
            .add_builtin::<core::ConfigMap>()
            .add_builtin::<core::Secret>()
            .add_builtin::<core::ServiceAccount>()
            .add_builtin::<core::Service>()
            .add_builtin::<core::Node>()
            .add_builtin::<core::Pod>()
            .add_builtin::<core::Event>()
            .add_builtin::<core::Endpoints>()
            .add_builtin::<core::PersistentVolumeClaim>()
            .add_builtin::<events::Event>()
            .add_builtin::<apps::Deployment>()
            .add_builtin::<apps::DaemonSet>()
            .add_builtin::<apps::StatefulSet>()
            .add_builtin::<apps::ReplicaSet>()
            .add_builtin::<apps::ControllerRevision>()
            .add_builtin::<coord::Lease>()
            .add_builtin::<rbac::Role>()
            .add_builtin::<rbac::RoleBinding>()
            .add_builtin::<rbac::ClusterRole>()
            .add_builtin::<rbac::ClusterRoleBinding>()
            .add_builtin::<adm::ValidatingWebhookConfiguration>()
            .add_builtin::<adm::MutatingWebhookConfiguration>()
            .add_builtin::<adm::ValidatingAdmissionPolicy>()
            .add_builtin::<adm::ValidatingAdmissionPolicyBinding>()
            .add_builtin::<apiext::CustomResourceDefinition>();
        for t in self.registry().all() {
            if let Some(crd) = &t.crd {
                for v in &t.versions {
                    let schema = crd.schemas.get(v).map_or(&Value::Null, |s| &**s);
                    b.add_crd_version(&t.group, v, &t.kind, &t.plural, t.namespaced, schema);
                }
            }
        }
        b
    }

    async fn resource<B>(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        body: B,
        rp: ResourcePath,
        accept: &str,
        user: &UserInfo,
    ) -> Result<Response<BoxBody>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let q = parse_query(parts.uri.query());
        let t = self.resolve_resource(&rp.group, &rp.version, &rp.resource)?;
        if !t.rt.namespaced && rp.namespace.is_some() {
            return Err(ApiError::NoRoute);
        }
        if t.rt.namespaced && rp.namespace.is_none() {
            // Without a namespace, a namespaced resource only has list/watch across namespaces.
            if rp.name.is_some() {
                return Err(ApiError::NoRoute);
            }
            if parts.method != Method::GET && parts.method != Method::HEAD {
                return Err(ApiError::MethodNotAllowed(
                    "the server does not allow this method on the requested resource".into(),
                ));
            }
        }
        let ns = rp.namespace.as_deref();
        let name = rp.name.as_deref();
        let sub = rp.sub.as_deref();
        let method = parts.method.clone();
        if rp.watch_prefix && method != Method::GET {
            return Err(ApiError::MethodNotAllowed("watch only supports GET".into()));
        }
        let is_watch = rp.watch_prefix || truthy(q.get("watch"));
        match (method, name, sub) {
            (Method::GET | Method::HEAD, None, None) => {
                let output = negotiate(accept)?;
                if is_watch {
                    return self.watch_response(&t, ns, None, &q, output);
                }
                self.list_response(&t, ns, &q, output)
            }
            (Method::GET | Method::HEAD, Some(name), None) => {
                let output = negotiate(accept)?;
                if is_watch {
                    return self.watch_response(&t, ns, Some(name), &q, output);
                }
                let obj = self.get(&t, ns, name)?;
                Ok(self.object_response(&t, obj, output, &q))
            }
            (Method::GET, Some(name), Some("status")) if t.rt.status => {
                let obj = self.get(&t, ns, name)?;
                Ok(json_response(200, &obj, "application/json", &[]))
            }
            (Method::GET, Some(name), Some("scale")) if t.rt.scale.is_some() => Ok(json_response(
                200,
                &self.get_scale(&t, ns, name)?,
                "application/json",
                &[],
            )),
            (Method::GET, Some(name), Some("log"))
                if t.rt.group.is_empty() && t.rt.plural == "pods" =>
            {
                // Pods run nowhere: logs are empty (the object must exist).
                self.get(&t, ns, name)?;
                let mut r = Response::new(full(""));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                Ok(r)
            }
            (Method::POST, None, None) => {
                let bytes = read_body(body).await?;
                let obj = decode_body(&content_type(parts), &bytes, &t)?;
                if t.rt.typed_check.is_none() && t.rt.verbs == ["create"] {
                    return Ok(json_response(
                        201,
                        &self.review(&t, obj, user)?,
                        "application/json",
                        &[],
                    ));
                }
                let opts = write_options(&q, parts)?;
                let out = self.create(&t, ns, obj, &opts)?;
                Ok(json_response(
                    201,
                    &out.object,
                    "application/json",
                    &out.warnings,
                ))
            }
            (Method::POST, Some(name), Some("token"))
                if t.rt.group.is_empty() && t.rt.plural == "serviceaccounts" =>
            {
                let bytes = read_body(body).await?;
                let ct = content_type(parts);
                let req: Value = match ct.as_str() {
                    "application/vnd.kubernetes.protobuf" => {
                        decode_protobuf(&bytes).map_err(ApiError::BadRequest)?
                    }
                    "application/yaml" => {
                        serde_saphyr::from_str(std::str::from_utf8(&bytes).unwrap_or_default())
                            .map_err(|e| ApiError::BadRequest(e.to_string()))?
                    }
                    _ if bytes.is_empty() => json!({}),
                    _ => serde_json::from_slice(&bytes)
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?,
                };
                let tr = self.create_token(ns.unwrap_or_default(), name, &req)?;
                Ok(json_response(201, &tr, "application/json", &[]))
            }
            (Method::POST, Some(name), Some("eviction"))
                if t.rt.group.is_empty() && t.rt.plural == "pods" =>
            {
                let _ = read_body(body).await?;
                self.delete(&t, ns, name, &DeleteOptions::default())?;
                Ok(json_response(
                    201,
                    &success_status("", "pods", name, ""),
                    "application/json",
                    &[],
                ))
            }
            (Method::PUT, Some(name), sub) => {
                let sub = match sub {
                    None => Subresource::Main,
                    Some("status") if t.rt.status => Subresource::Status,
                    Some("scale") if t.rt.scale.is_some() => Subresource::Scale,
                    Some("finalize") if t.rt.group.is_empty() && t.rt.plural == "namespaces" => {
                        Subresource::Finalize
                    }
                    _ => return Err(ApiError::NoRoute),
                };
                let bytes = read_body(body).await?;
                let obj = if sub == Subresource::Scale {
                    serde_json::from_slice(&bytes)
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?
                } else {
                    decode_body(&content_type(parts), &bytes, &t)?
                };
                let opts = write_options(&q, parts)?;
                let out = self.update(&t, ns, name, obj, sub, &opts)?;
                Ok(json_response(
                    if out.created { 201 } else { 200 },
                    &out.object,
                    "application/json",
                    &out.warnings,
                ))
            }
            (Method::PATCH, Some(name), sub) => {
                let sub = match sub {
                    None => Subresource::Main,
                    Some("status") if t.rt.status => Subresource::Status,
                    Some("scale") if t.rt.scale.is_some() => Subresource::Scale,
                    _ => return Err(ApiError::NoRoute),
                };
                let pt = patch_type(&content_type(parts))?;
                let bytes = read_body(body).await?;
                let patch_body: Value = if pt == PatchType::Apply {
                    let s = std::str::from_utf8(&bytes)
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                    serde_saphyr::from_str(s)
                        .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?
                } else {
                    serde_json::from_slice(&bytes)
                        .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?
                };
                let mut opts = write_options(&q, parts)?;
                if pt == PatchType::Apply && q.get("fieldManager").is_none_or(|m| m.is_empty()) {
                    return Err(ApiError::BadRequest("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into()));
                }
                if pt != PatchType::Apply && truthy(q.get("force")) {
                    return Err(ApiError::BadRequest(
                        "force: Forbidden: may not be specified for non-apply patch".into(),
                    ));
                }
                if pt != PatchType::Apply {
                    opts.force = false;
                }
                let out = self.patch(&t, ns, name, pt, &patch_body, sub, &opts)?;
                let code = if out.created { 201 } else { 200 };
                Ok(json_response(
                    code,
                    &out.object,
                    "application/json",
                    &out.warnings,
                ))
            }
            (Method::DELETE, Some(name), None) => {
                let bytes = read_body(body).await?;
                let b: Option<Value> = if bytes.is_empty() {
                    None
                } else {
                    Some(decode_delete_body(parts, &bytes)?)
                };
                let opts = delete_options(&q, b.as_ref())?;
                let out = self.delete(&t, ns, name, &opts)?;
                let code = if out.deleted { 200 } else { 202 };
                if out.deleted && !t.rt.return_deleted_object {
                    let uid = out.object["metadata"]["uid"].as_str().unwrap_or_default();
                    return Ok(json_response(
                        code,
                        &success_status(&t.rt.group, &t.rt.plural, name, uid),
                        "application/json",
                        &[],
                    ));
                }
                Ok(json_response(code, &out.object, "application/json", &[]))
            }
            (Method::DELETE, None, None) => {
                let bytes = read_body(body).await?;
                let b: Option<Value> = if bytes.is_empty() {
                    None
                } else {
                    Some(decode_delete_body(parts, &bytes)?)
                };
                let opts = delete_options(&q, b.as_ref())?;
                let list = list_options(&q)?;
                let out = self.delete_collection(&t, ns, &list, &opts)?;
                Ok(json_response(200, &out, "application/json", &[]))
            }
            (
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::GET,
                _,
                Some(_),
            ) => Err(ApiError::NoRoute),
            (m, _, _) => Err(ApiError::MethodNotAllowed(format!(
                "{m} is not supported on {}",
                rp.resource
            ))),
        }
    }

    fn review(&self, t: &Target, mut obj: Value, user: &UserInfo) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request was not a JSON object".into(),
            ));
        }
        obj["apiVersion"] = json!(t.api_version());
        obj["kind"] = json!(t.rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let user_json = json!({"username": user.username, "uid": user.uid, "groups": user.groups});
        obj["status"] = match t.rt.kind.as_str() {
            // Authorization is not enforced: everything is allowed.
            "SelfSubjectAccessReview" => {
                json!({"allowed": true, "reason": "kube-sim does not enforce authorization"})
            }
            "SelfSubjectRulesReview" => json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            }),
            "SelfSubjectReview" => json!({"userInfo": user_json}),
            "TokenReview" => {
                let token = obj["spec"]["token"].as_str().unwrap_or_default();
                match self.authenticator().authenticate(Some(token), None) {
                    Some(u) => {
                        json!({"authenticated": true, "user": {"username": u.username, "uid": u.uid, "groups": u.groups}, "audiences": [crate::auth::API_AUDIENCE]})
                    }
                    None => json!({"authenticated": false, "error": "invalid bearer token"}),
                }
            }
            _ => return Err(ApiError::MethodNotAllowed("unsupported review".into())),
        };
        Ok(obj)
    }

    fn object_response(
        &self,
        t: &Target,
        obj: Value,
        output: Output,
        q: &BTreeMap<String, String>,
    ) -> Response<BoxBody> {
        match output {
            Output::Json => json_response(200, &obj, "application/json", &[]),
            Output::Metadata => json_response(
                200,
                &table::partial_metadata(&obj),
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
                &[],
            ),
            Output::Table => {
                let include = IncludeObject::parse(q.get("includeObject").map(String::as_str));
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                let tb = table::table(&t.rt, &t.version, &[obj], meta, include);
                json_response(
                    200,
                    &tb,
                    "application/json;as=Table;g=meta.k8s.io;v=v1",
                    &[],
                )
            }
        }
    }

    fn list_response(
        &self,
        t: &Target,
        ns: Option<&str>,
        q: &BTreeMap<String, String>,
        output: Output,
    ) -> Result<Response<BoxBody>, ApiError> {
        let opts = list_options(q)?;
        let list = self.list(t, ns, &opts)?;
        let items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
        Ok(match output {
            Output::Json => json_response(200, &list, "application/json", &[]),
            Output::Metadata => {
                let items: Vec<Value> = items.iter().map(table::partial_metadata).collect();
                let doc = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list["metadata"], "items": items});
                json_response(
                    200,
                    &doc,
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                    &[],
                )
            }
            Output::Table => {
                let include = IncludeObject::parse(q.get("includeObject").map(String::as_str));
                let tb = table::table(&t.rt, &t.version, &items, list["metadata"].clone(), include);
                json_response(
                    200,
                    &tb,
                    "application/json;as=Table;g=meta.k8s.io;v=v1",
                    &[],
                )
            }
        })
    }

    fn watch_response(
        &self,
        t: &Target,
        ns: Option<&str>,
        name: Option<&str>,
        q: &BTreeMap<String, String>,
        output: Output,
    ) -> Result<Response<BoxBody>, ApiError> {
        let mut list = list_options(q)?;
        if let Some(name) = name {
            let by_name = format!("metadata.name={name}");
            list.field_selector = Some(match list.field_selector.filter(|f| !f.is_empty()) {
                Some(f) => format!("{by_name},{f}"),
                None => by_name,
            });
        }
        let timeout = match q
            .get("timeoutSeconds")
            .filter(|s| !s.is_empty() && s.as_str() != "0")
        {
            Some(s) => Some(Duration::from_secs(s.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("invalid timeoutSeconds: {s}"))
            })?)),
            // kube-apiserver picks a random timeout of 30-60 minutes; use the upper bound.
            None => Some(Duration::from_secs(3600)),
        };
        let send_initial_events = if truthy(q.get("sendInitialEvents")) {
            Some(true)
        } else if falsy(q.get("sendInitialEvents")) {
            Some(false)
        } else {
            None
        };
        let opts = WatchOptions {
            list,
            allow_bookmarks: truthy(q.get("allowWatchBookmarks")),
            send_initial_events,
            timeout,
        };
        let stream = self.watch(t, ns, &opts)?;
        let rt = t.rt.clone();
        let version = t.version.clone();
        let include = IncludeObject::parse(q.get("includeObject").map(String::as_str));
        let frames = stream.map(move |ev: WatchEvent| {
            let object = match output {
                _ if ev.kind == "ERROR" => ev.object,
                Output::Json => ev.object,
                Output::Metadata => table::partial_metadata(&ev.object),
                Output::Table if ev.kind == "BOOKMARK" => ev.object,
                Output::Table => {
                    let meta = json!({"resourceVersion": ev.object["metadata"]["resourceVersion"]});
                    table::table(&rt, &version, &[ev.object], meta, include)
                }
            };
            let mut line =
                serde_json::to_vec(&json!({"type": ev.kind, "object": object})).unwrap_or_default();
            line.push(b'\n');
            Ok::<_, Infallible>(Frame::data(Bytes::from(line)))
        });
        let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
        let ct = match output {
            Output::Table => "application/json;as=Table;g=meta.k8s.io;v=v1",
            _ => "application/json",
        };
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(resp)
    }
}

fn decode_delete_body(parts: &http::request::Parts, bytes: &[u8]) -> Result<Value, ApiError> {
    match content_type(parts).as_str() {
        "application/vnd.kubernetes.protobuf" => {
            decode_protobuf(bytes).map_err(ApiError::BadRequest)
        }
        "application/yaml" => {
            serde_saphyr::from_str(std::str::from_utf8(bytes).unwrap_or_default())
                .map_err(|e| ApiError::BadRequest(e.to_string()))
        }
        _ => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}"))),
    }
}

/// Serves `api` over plain HTTP (HTTP/1.1 and h2c) on an already-bound listener, treating every
/// request as `user`, until `shutdown` completes. For tests and local tools: no TLS, no
/// authentication. Open connections (including watches) are closed on shutdown.
///
/// # Errors
/// Only if accepting connections fails.
pub async fn serve_plain(
    listener: tokio::net::TcpListener,
    api: Arc<ApiServer>,
    user: UserInfo,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let api = api.clone();
                let user = user.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let api = api.clone();
                        let user = user.clone();
                        async move { Ok::<_, Infallible>(api.handle(req, user).await) }
                    });
                    if let Err(e) = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(error = %e, "Connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_namespaced_cluster_and_legacy_watch_paths() {
        assert_eq!(route("/version"), Some(Route::Version));
        assert_eq!(route("/apis/"), Some(Route::Apis));
        let Some(Route::Resource(r)) = route("/api/v1/namespaces/ns1/configmaps/cm1") else {
            panic!()
        };
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.resource.as_str(),
                r.name.as_deref()
            ),
            (Some("ns1"), "configmaps", Some("cm1"))
        );
        let Some(Route::Resource(r)) = route("/api/v1/namespaces/ns1") else {
            panic!()
        };
        assert_eq!(
            (r.namespace, r.resource.as_str(), r.name.as_deref()),
            (None, "namespaces", Some("ns1"))
        );
        let Some(Route::Resource(r)) = route("/api/v1/namespaces/ns1/finalize") else {
            panic!()
        };
        assert_eq!(
            (r.resource.as_str(), r.sub.as_deref()),
            ("namespaces", Some("finalize"))
        );
        let Some(Route::Resource(r)) = route("/apis/apps/v1/watch/namespaces/x/deployments") else {
            panic!()
        };
        assert!(r.watch_prefix);
        assert_eq!(r.group, "apps");
        assert_eq!(route("/nope"), None);
    }

    #[test]
    fn accept_negotiation_prefers_first_supported() {
        assert_eq!(
            negotiate("application/json;as=Table;v=v1;g=meta.k8s.io,application/json").unwrap(),
            Output::Table
        );
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1").unwrap(),
            Output::Metadata
        );
        assert_eq!(negotiate("").unwrap(), Output::Json);
        assert!(negotiate("text/html").is_err());
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["limit"], "5");
    }
}
