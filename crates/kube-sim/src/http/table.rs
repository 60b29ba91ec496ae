//! Server-side `Table` output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), which
//! `kubectl get` uses for every resource.
//!
//! Custom resources use their `additionalPrinterColumns` (JSONPath subset: field paths, indexes
//! and `[?(@.field=="value")]` filters); a few built-ins get kubectl-like columns; everything else
//! gets Name and Age.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::registry::ResourceType;

/// What each row carries in `object` (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// A `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

struct Column {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: i64,
    path: Option<String>,
}

fn col(name: &str, ty: &str, format: &str, priority: i64, path: Option<&str>) -> Column {
    Column {
        name: name.to_owned(),
        ty: ty.to_owned(),
        format: format.to_owned(),
        description: String::new(),
        priority,
        path: path.map(str::to_owned),
    }
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    let minutes = secs / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    let years = days / 365;
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if years < 8 {
        let dd = days % 365;
        if dd == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dd}d")
        }
    } else {
        format!("{years}y")
    }
}

fn age(ts: &Value) -> String {
    ts.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_duration(Utc::now() - t.with_timezone(&Utc)))
        .unwrap_or_else(|| "<unknown>".into())
}

/// Evaluates a kubectl-style JSONPath (subset) against `obj`; all matches.
pub fn json_path(obj: &Value, path: &str) -> Vec<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut current = vec![obj.clone()];
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            rest = &r[end..];
            if field.is_empty() {
                continue;
            }
            current = current
                .iter()
                .filter_map(|v| v.get(field).cloned())
                .collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                let (lhs, rhs) = match filter.split_once("==") {
                    Some(p) => p,
                    None => return Vec::new(),
                };
                let field = lhs.trim().trim_start_matches('@').trim_start_matches('.');
                let want = rhs.trim().trim_matches('"').trim_matches('\'');
                current = current
                    .iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|item| {
                        let got = json_path(item, &format!(".{field}"));
                        got.first().is_some_and(|g| match g {
                            Value::String(s) => s == want,
                            other => *other == want,
                        })
                    })
                    .cloned()
                    .collect();
            } else if inner == "*" {
                current = current
                    .iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .cloned()
                    .collect();
            } else if let Ok(i) = inner.parse::<i64>() {
                current = current
                    .iter()
                    .filter_map(Value::as_array)
                    .filter_map(|a| {
                        let idx = if i < 0 { a.len() as i64 + i } else { i };
                        usize::try_from(idx).ok().and_then(|i| a.get(i).cloned())
                    })
                    .collect();
            } else {
                // CRD printer columns quote label keys and escape their dots, e.g.
                // `.metadata.labels['cluster\.x-k8s\.io/cluster-name']` (Cluster API's).
                let field = inner
                    .trim_matches('\'')
                    .trim_matches('"')
                    .replace("\\.", ".");
                current = current
                    .iter()
                    .filter_map(|v| v.get(&field).cloned())
                    .collect();
            }
        } else {
            return Vec::new();
        }
    }
    current
}

fn builtin_columns(t: &ResourceType) -> Vec<Column> {
    match (t.group.as_str(), t.plural.as_str()) {
        ("", "pods") => vec![
            col("Name", "string", "name", 0, None),
            col("Ready", "string", "", 0, None),
            col("Status", "string", "", 0, None),
            col("Restarts", "string", "", 0, None),
            col("Age", "string", "", 0, None),
            col("IP", "string", "", 1, Some(".status.podIP")),
            col("Node", "string", "", 1, Some(".spec.nodeName")),
        ],
        ("apps", "deployments") => vec![
            col("Name", "string", "name", 0, None),
            col("Ready", "string", "", 0, None),
            col(
                "Up-to-date",
                "integer",
                "",
                0,
                Some(".status.updatedReplicas"),
            ),
            col(
                "Available",
                "integer",
                "",
                0,
                Some(".status.availableReplicas"),
            ),
            col("Age", "string", "", 0, None),
            col("Containers", "string", "", 1, None),
            col("Images", "string", "", 1, None),
            col("Selector", "string", "", 1, None),
        ],
        ("", "services") => vec![
            col("Name", "string", "name", 0, None),
            col("Type", "string", "", 0, Some(".spec.type")),
            col("Cluster-IP", "string", "", 0, None),
            col("External-IP", "string", "", 0, None),
            col("Port(s)", "string", "", 0, None),
            col("Age", "string", "", 0, None),
            col("Selector", "string", "", 1, None),
        ],
        ("apps", "replicasets") => vec![
            col("Name", "string", "name", 0, None),
            col("Desired", "integer", "", 0, Some(".spec.replicas")),
            col("Current", "integer", "", 0, Some(".status.replicas")),
            col("Ready", "integer", "", 0, Some(".status.readyReplicas")),
            col("Age", "string", "", 0, None),
            col("Containers", "string", "", 1, None),
            col("Images", "string", "", 1, None),
            col("Selector", "string", "", 1, None),
        ],
        ("apps", "statefulsets") => vec![
            col("Name", "string", "name", 0, None),
            col("Ready", "string", "", 0, None),
            col("Age", "string", "", 0, None),
            col("Containers", "string", "", 1, None),
            col("Images", "string", "", 1, None),
        ],
        ("apps", "daemonsets") => vec![
            col("Name", "string", "name", 0, None),
            col(
                "Desired",
                "integer",
                "",
                0,
                Some(".status.desiredNumberScheduled"),
            ),
            col(
                "Current",
                "integer",
                "",
                0,
                Some(".status.currentNumberScheduled"),
            ),
            col("Ready", "integer", "", 0, Some(".status.numberReady")),
            col(
                "Up-to-date",
                "integer",
                "",
                0,
                Some(".status.updatedNumberScheduled"),
            ),
            col(
                "Available",
                "integer",
                "",
                0,
                Some(".status.numberAvailable"),
            ),
            col("Node Selector", "string", "", 0, None),
            col("Age", "string", "", 0, None),
            col("Containers", "string", "", 1, None),
            col("Images", "string", "", 1, None),
            col("Selector", "string", "", 1, None),
        ],
        ("", "nodes") => vec![
            col("Name", "string", "name", 0, None),
            col("Status", "string", "", 0, None),
            col("Roles", "string", "", 0, None),
            col("Age", "string", "", 0, None),
            col(
                "Version",
                "string",
                "",
                0,
                Some(".status.nodeInfo.kubeletVersion"),
            ),
        ],
        ("", "namespaces") => vec![
            col("Name", "string", "name", 0, None),
            col("Status", "string", "", 0, Some(".status.phase")),
            col("Age", "string", "", 0, None),
        ],
        ("", "configmaps") => vec![
            col("Name", "string", "name", 0, None),
            col("Data", "integer", "", 0, None),
            col("Age", "string", "", 0, None),
        ],
        ("", "secrets") => vec![
            col("Name", "string", "name", 0, None),
            col("Type", "string", "", 0, Some(".type")),
            col("Data", "integer", "", 0, None),
            col("Age", "string", "", 0, None),
        ],
        ("" | "events.k8s.io", "events") => vec![
            col("Last Seen", "string", "", 0, None),
            col("Type", "string", "", 0, Some(".type")),
            col("Reason", "string", "", 0, Some(".reason")),
            col("Object", "string", "", 0, None),
            col("Message", "string", "", 0, None),
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => vec![
            col("Name", "string", "name", 0, None),
            col("Created At", "date", "", 0, None),
        ],
        _ => vec![
            col("Name", "string", "name", 0, None),
            col("Age", "string", "", 0, None),
        ],
    }
}

fn columns(t: &ResourceType, version: &str) -> Vec<Column> {
    if let Some(crd) = &t.crd {
        let defs = crd
            .printer_columns
            .get(version)
            .cloned()
            .unwrap_or_default();
        let mut cols = vec![col("Name", "string", "name", 0, None)];
        if defs.is_empty() {
            cols.push(col(
                "Age",
                "date",
                "",
                0,
                Some(".metadata.creationTimestamp"),
            ));
        }
        for d in defs {
            cols.push(Column {
                name: d["name"].as_str().unwrap_or_default().to_owned(),
                ty: d["type"].as_str().unwrap_or("string").to_owned(),
                format: d["format"].as_str().unwrap_or_default().to_owned(),
                description: d["description"].as_str().unwrap_or_default().to_owned(),
                priority: d["priority"].as_i64().unwrap_or(0),
                path: Some(d["jsonPath"].as_str().unwrap_or_default().to_owned()),
            });
        }
        return cols;
    }
    builtin_columns(t)
}

fn builtin_cell(t: &ResourceType, c: &Column, obj: &Value) -> Value {
    let status = &obj["status"];
    match (t.plural.as_str(), c.name.as_str()) {
        (_, "Name") => obj["metadata"]["name"].clone(),
        (_, "Age") => json!(age(&obj["metadata"]["creationTimestamp"])),
        ("pods", "Ready") => {
            let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = status["containerStatuses"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|c| c["ready"] == true).count());
            json!(format!("{ready}/{total}"))
        }
        ("pods", "Status") => {
            if obj["metadata"]["deletionTimestamp"].is_string() {
                json!("Terminating")
            } else {
                json!(
                    status["reason"]
                        .as_str()
                        .or(status["phase"].as_str())
                        .unwrap_or("Pending")
                )
            }
        }
        ("pods", "Restarts") => {
            let n: i64 = status["containerStatuses"].as_array().map_or(0, |a| {
                a.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
            });
            json!(n.to_string())
        }
        ("services", "Cluster-IP") => {
            json!(obj["spec"]["clusterIP"].as_str().unwrap_or("<none>"))
        }
        ("services", "External-IP") => {
            let ingress: Vec<&str> = status["loadBalancer"]["ingress"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                        .collect()
                })
                .unwrap_or_default();
            let external: Vec<&str> = obj["spec"]["externalIPs"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let all: Vec<&str> = ingress.into_iter().chain(external).collect();
            let ty = obj["spec"]["type"].as_str().unwrap_or_default();
            json!(if !all.is_empty() {
                all.join(",")
            } else if ty == "LoadBalancer" {
                "<pending>".to_owned()
            } else if ty == "ExternalName" {
                obj["spec"]["externalName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            } else {
                "<none>".to_owned()
            })
        }
        ("services", "Port(s)") => {
            let ports: Vec<String> = obj["spec"]["ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            let proto = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_i64() {
                                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                                None => format!("{}/{proto}", p["port"]),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!(if ports.is_empty() {
                "<none>".to_owned()
            } else {
                ports.join(",")
            })
        }
        ("services", "Selector") => {
            let sel: Vec<String> = obj["spec"]["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            json!(if sel.is_empty() {
                "<none>".to_owned()
            } else {
                sel.join(",")
            })
        }
        ("daemonsets", "Node Selector") => {
            let sel: Vec<String> = obj["spec"]["template"]["spec"]["nodeSelector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            json!(if sel.is_empty() {
                "<none>".to_owned()
            } else {
                sel.join(",")
            })
        }
        ("statefulsets", "Ready") => json!(format!(
            "{}/{}",
            status["readyReplicas"].as_i64().unwrap_or(0),
            obj["spec"]["replicas"].as_i64().unwrap_or(1)
        )),
        (
            "replicasets" | "daemonsets",
            "Desired" | "Current" | "Ready" | "Up-to-date" | "Available",
        ) => {
            json!(path_cell(c, obj).as_i64().unwrap_or(0))
        }
        ("deployments", "Up-to-date" | "Available") => {
            json!(path_cell(c, obj).as_i64().unwrap_or(0))
        }
        (
            "deployments" | "replicasets" | "statefulsets" | "daemonsets",
            "Containers" | "Images",
        ) => {
            let field = if c.name == "Images" { "image" } else { "name" };
            let list: Vec<&str> = obj["spec"]["template"]["spec"]["containers"]
                .as_array()
                .map(|cs| cs.iter().filter_map(|c| c[field].as_str()).collect())
                .unwrap_or_default();
            json!(list.join(","))
        }
        ("deployments" | "replicasets" | "statefulsets" | "daemonsets", "Selector") => {
            json!(crate::api_server::selector_string(&obj["spec"]["selector"]))
        }
        ("deployments", "Ready") => {
            json!(format!(
                "{}/{}",
                status["readyReplicas"].as_i64().unwrap_or(0),
                obj["spec"]["replicas"].as_i64().unwrap_or(1)
            ))
        }
        ("nodes", "Status") => {
            let ready = status["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            let unsched = obj["spec"]["unschedulable"] == true;
            json!(if unsched {
                format!("{ready},SchedulingDisabled")
            } else {
                ready.to_owned()
            })
        }
        ("nodes", "Roles") => {
            let roles: Vec<String> = obj["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/")
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!(if roles.is_empty() {
                "<none>".to_owned()
            } else {
                roles.join(",")
            })
        }
        (_, "Created At") => obj["metadata"]["creationTimestamp"].clone(),
        ("events", "Last Seen") => {
            let at = [
                &obj["series"]["lastObservedTime"],
                &obj["lastTimestamp"],
                &obj["eventTime"],
                &obj["deprecatedLastTimestamp"],
            ]
            .into_iter()
            .find(|v| v.is_string())
            .cloned()
            .unwrap_or_else(|| obj["metadata"]["creationTimestamp"].clone());
            json!(age(&at))
        }
        ("events", "Object") => {
            let o = if obj["involvedObject"].is_object() {
                &obj["involvedObject"]
            } else {
                &obj["regarding"]
            };
            json!(format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default().to_lowercase(),
                o["name"].as_str().unwrap_or_default()
            ))
        }
        ("events", "Message") => json!(
            obj["message"]
                .as_str()
                .or(obj["note"].as_str())
                .unwrap_or_default()
        ),
        ("configmaps", "Data") => json!(
            obj["data"].as_object().map_or(0, |m| m.len())
                + obj["binaryData"].as_object().map_or(0, |m| m.len())
        ),
        ("secrets", "Data") => json!(obj["data"].as_object().map_or(0, |m| m.len())),
        _ => path_cell(c, obj),
    }
}

fn path_cell(c: &Column, obj: &Value) -> Value {
    let Some(path) = &c.path else {
        return Value::Null;
    };
    let values = json_path(obj, path);
    let Some(first) = values.first() else {
        return Value::Null;
    };
    if c.ty == "date" {
        return json!(age(first));
    }
    match first {
        Value::Array(_) | Value::Object(_) => json!(first.to_string()),
        other => other.clone(),
    }
}

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => Some(partial_metadata(obj)),
    }
}

/// The `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// A `Table` of `objects`; `list_meta` becomes the table's metadata.
pub fn table(
    t: &ResourceType,
    version: &str,
    objects: &[Value],
    list_meta: Value,
    include: IncludeObject,
) -> Value {
    let cols = columns(t, version);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols
                .iter()
                .map(|c| {
                    if t.crd.is_some() {
                        if c.name == "Name" && c.path.is_none() {
                            o["metadata"]["name"].clone()
                        } else {
                            path_cell(c, o)
                        }
                    } else {
                        builtin_cell(t, c, o)
                    }
                })
                .collect();
            let mut row = json!({"cells": cells});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_supports_filters_and_indexes() {
        let obj = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}, "spec": {"items": [1, 2]}});
        assert_eq!(
            json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(json_path(&obj, ".spec.items[1]"), vec![json!(2)]);
        assert_eq!(
            json_path(&obj, "{.spec.items[*]}"),
            vec![json!(1), json!(2)]
        );
        assert!(json_path(&obj, ".nope.x").is_empty());
        let labelled = json!({"metadata": {"labels": {"cluster.x-k8s.io/cluster-name": "c1"}}});
        assert_eq!(
            json_path(
                &labelled,
                r".metadata.labels['cluster\.x-k8s\.io/cluster-name']"
            ),
            vec![json!("c1")]
        );
    }

    #[test]
    fn human_durations_match_kubernetes() {
        assert_eq!(human_duration(chrono::Duration::seconds(5)), "5s");
        assert_eq!(human_duration(chrono::Duration::seconds(150)), "2m30s");
        assert_eq!(human_duration(chrono::Duration::minutes(30)), "30m");
        assert_eq!(human_duration(chrono::Duration::hours(50)), "2d2h");
    }

    #[test]
    fn crd_tables_use_printer_columns() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]}]}
        });
        let t = crate::registry::crd_type(&crd).unwrap();
        let obj = json!({"metadata": {"name": "w1", "creationTimestamp": "2020-01-01T00:00:00Z"}, "spec": {"size": 3}});
        let tb = table(&t, "v1", &[obj], json!({}), IncludeObject::Metadata);
        assert_eq!(tb["columnDefinitions"][1]["name"], "Size");
        assert_eq!(tb["rows"][0]["cells"], json!(["w1", 3]));
        assert_eq!(tb["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
