//! A generic, in-process Kubernetes API server, faithful enough that kube-rs, `kubectl` and the
//! official Python client work against it unmodified.
//!
//! It exists so that Fledge's manager and agent can be tested end to end without a real cluster:
//! one process hosts many simulated clusters, each with its own port, CA, store and
//! resourceVersion sequence. The crate knows nothing about Cluster API or Fledge.
//!
//! # What it implements
//! - Discovery (`/version`, `/api`, `/apis`, legacy and aggregated), OpenAPI v2/v3.
//! - Built-in types (core, apps, events, coordination, RBAC, admissionregistration,
//!   apiextensions) stored generically as JSON; CustomResourceDefinitions with every served
//!   version (conversion `None`), schema validation, pruning and defaulting, `status` and
//!   `scale` subresources and printer columns.
//! - All verbs with kube-apiserver's semantics: resourceVersions, optimistic concurrency,
//!   generation, dry-run, field validation, managedFields, patches (merge, JSON, strategic,
//!   server-side apply), finalizers, graceful deletion, garbage collection by owner uid,
//!   namespace and CRD cleanup, list pagination consistent at a resourceVersion, watches with
//!   bookmarks and streaming lists, `Table` and metadata-only output.
//! - ServiceAccount tokens (TokenRequest, token Secrets), the `default` ServiceAccount per
//!   namespace, the four initial namespaces and the `kubernetes` Service.
//! - An in-process object API on [`ApiServer`] (`create_object`, `get_object`,
//!   `list_objects`, `update_object`, `update_object_status`, `patch_object`, `apply_object`,
//!   `delete_object`, `watch_objects`, and the [`api_server::Target`]-based verbs) for
//!   simulated controllers, sharing every code path with HTTP; [`serve_plain`] serves the API
//!   over plain HTTP for tests.
//!
//! # What it does not
//! - Authorization: RBAC objects are stored but never enforced; every authenticated user may
//!   do everything.
//! - Workloads: nothing runs. Deployments do not create ReplicaSets or Pods, Pods have no logs
//!   (`pods/log` answers empty), Services get a cluster IP but no endpoints. Pods bound to a
//!   node and deleted gracefully go after at most one second, as if their containers exited.
//! - Admission webhooks and CEL validation rules are stored but not called or evaluated.
//! - Persistence: state lives in memory. Responses are JSON only (protobuf is accepted in
//!   request bodies).
//! - Limits: request bodies are limited to 3 MiB (413), stored objects to
//!   [`api_server::DEFAULT_MAX_OBJECT_BYTES`] (1.5 MiB, etcd's value limit; 413 as well).
//!
//! # Layout
//! - [`api_server`]: [`ApiServer`], the semantics of every verb, shared by HTTP and in-process
//!   callers.
//! - [`store`]: objects, the resourceVersion sequence and bounded per-type history.
//! - [`watch`]: watch streams (selectors, bookmarks, 410 Gone).
//! - [`registry`]: resource types (built-ins and CRDs) and their discovery data.
//! - [`defaults`]: defaulting and immutability of built-in types.
//! - [`gc`]: background controllers (garbage collector, namespace/CRD finalizers, tokens).
//! - [`http`]: routing, content negotiation, `Status` errors, discovery, `Table`.
//! - [`patch`], [`schema`], [`selector`], [`openapi`], [`protobuf`]: pure building blocks.
//! - [`auth`], [`tls`], [`kubeconfig`]: who is calling, certificates and client configuration.

pub mod api_server;
pub mod auth;
pub mod defaults;
pub mod gc;
pub mod http;
pub mod intern;
pub mod kubeconfig;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod sim;
pub mod store;
pub mod tls;
pub mod watch;

pub use api_server::{ApiServer, ApiServerConfig};
pub use auth::UserInfo;
pub use http::status::ApiError;
pub use http::{BoxBody, serve_plain};
