//! `kubectl get` in every output format, CRD printer columns, `describe`, `--watch`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::manifests::{GADGET_CRD, gadget};
use crate::support::{Cluster, has_row};

async fn deployment(k: &Cluster) {
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
    ])
    .await;
}

#[tokio::test]
async fn get_yaml_and_json() {
    let k = Cluster::start().await;
    k.ok(&["create", "configmap", "cfg", "--from-literal=k=v"])
        .await;
    let yaml = k.ok(&["get", "configmap", "cfg", "-o", "yaml"]).await;
    let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["data"]["k"].as_str()),
        (Some("ConfigMap"), Some("v")),
        "{yaml}"
    );
    let j = k.json(&["get", "configmap", "cfg"]).await;
    assert_eq!(j["metadata"]["name"], "cfg");
    assert!(j["metadata"]["resourceVersion"].is_string());
    let list = k.json(&["get", "configmaps"]).await;
    assert_eq!(list["kind"], "List");
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["metadata"]["name"] == "cfg"),
        "{list}"
    );
    let name = k.ok(&["get", "configmap", "cfg", "-o", "name"]).await;
    assert_eq!(name.trim(), "configmap/cfg");
    let jp = k
        .ok(&["get", "configmap", "cfg", "-o", "jsonpath={.data.k}"])
        .await;
    assert_eq!(jp, "v");
}

#[tokio::test]
async fn get_tables_default_and_wide() {
    let k = Cluster::start().await;
    deployment(&k).await;
    let table = k.ok(&["get", "deployments"]).await;
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] {
        assert!(header.contains(col), "column {col} in {header:?}");
    }
    assert!(table.lines().any(|l| l.starts_with("web ")), "{table}");
    let wide = k.ok(&["get", "deployments", "-o", "wide"]).await;
    let header = wide.lines().next().unwrap_or_default();
    for col in ["CONTAINERS", "IMAGES", "SELECTOR"] {
        assert!(header.contains(col), "wide column {col} in {header:?}");
    }
    assert!(
        has_row(&wide, &["web", "nginx", "nginx:1.27", "app=web"]),
        "{wide}"
    );
    let ns = k.ok(&["get", "namespaces"]).await;
    assert!(has_row(&ns, &["default", "Active"]), "{ns}");
    let none = k
        .run(&["get", "secrets", "-n", "kube-public", "-l", "nothing=here"])
        .await;
    assert_eq!(none.code, 0);
    assert!(none.stderr.contains("No resources found"), "{none:?}");
}

#[tokio::test]
async fn crd_table_uses_printer_columns() {
    let k = Cluster::start().await;
    let crd = k.file("crd.yaml", GADGET_CRD);
    k.ok(&["apply", "-f", crd.to_str().unwrap()]).await;
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=15s",
        "crd/gadgets.kubectl.kube-sim.dev",
    ])
    .await;
    let g = k.file("g.yaml", &gadget("g1", "red", 3));
    k.ok(&["apply", "-f", g.to_str().unwrap()]).await;
    let table = k.ok(&["get", "gadgets"]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "COLOR", "DESIRED", "AGE"], "{table}");
    assert!(has_row(&table, &["g1", "red", "3"]), "{table}");
    // Priority > 0 columns only show with -o wide.
    let wide = k.ok(&["get", "gadgets", "-o", "wide"]).await;
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "COLOR", "DESIRED", "AGE", "PHASE"],
        "{wide}"
    );
    // Short names resolve through discovery.
    let short = k.ok(&["get", "gd", "g1", "-o", "name"]).await;
    assert_eq!(short.trim(), "gadget.kubectl.kube-sim.dev/g1");
}

#[tokio::test]
async fn describe_shows_fields() {
    let k = Cluster::start().await;
    k.ok(&["create", "configmap", "cfg", "--from-literal=color=blue"])
        .await;
    let out = k.ok(&["describe", "configmap", "cfg"]).await;
    for want in [
        "Name:",
        "cfg",
        "Namespace:",
        "default",
        "Data",
        "color",
        "blue",
    ] {
        assert!(out.contains(want), "{want} in describe output:\n{out}");
    }
    deployment(&k).await;
    let out = k.ok(&["describe", "deployment", "web"]).await;
    for want in [
        "Name:",
        "web",
        "Replicas:",
        "Selector:",
        "app=web",
        "nginx:1.27",
    ] {
        assert!(out.contains(want), "{want} in describe output:\n{out}");
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

async fn read_until(seen: &mut Vec<String>, lines: &mut Lines, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !seen.iter().any(|l| l.contains(want)) {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => seen.push(line),
            other => panic!("waiting for {want} in kubectl get --watch output {seen:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn get_watch_streams_changes() {
    let k = Cluster::start().await;
    k.ok(&["create", "configmap", "first"]).await;
    let mut child = k.spawn(&["get", "configmaps", "--watch", "-o", "name"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    read_until(&mut seen, &mut lines, "configmap/first").await;
    k.ok(&["create", "configmap", "second"]).await;
    read_until(&mut seen, &mut lines, "configmap/second").await;
    k.ok(&["delete", "configmap", "first"]).await;
    // A deletion is one more line for the same object.
    let before = seen
        .iter()
        .filter(|l| l.contains("configmap/first"))
        .count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen
        .iter()
        .filter(|l| l.contains("configmap/first"))
        .count()
        == before
    {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => seen.push(line),
            other => panic!("waiting for the deletion in {seen:?}: {other:?}"),
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the watch keeps running"
    );
    child.kill().await.unwrap();
}
