//! More everyday kubectl: `diff`, `replace`, `delete -f`, `get -A`, `get all`, custom columns,
//! `get --raw`, `auth can-i`/`whoami`, `create -f` with generateName.

use crate::manifests::bundle;
use crate::support::{Cluster, has_row};

#[tokio::test]
async fn diff_shows_pending_changes() {
    let k = Cluster::start().await;
    let same = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: default\ndata:\n  color: blue\n";
    let out = k.run_with_input(&["diff", "-f", "-"], same).await;
    assert_eq!(out.code, 1, "a missing object is a difference: {out:?}");
    assert!(out.stdout.contains("+  color: blue"), "{out:?}");
    assert_eq!(
        k.run(&["get", "configmap", "cfg"]).await.code,
        1,
        "diff created nothing"
    );
    let applied = k.run_with_input(&["apply", "-f", "-"], same).await;
    assert_eq!(applied.code, 0, "{applied:?}");
    let out = k.run_with_input(&["diff", "-f", "-"], same).await;
    assert_eq!(out.code, 0, "no differences: {out:?}");
    let changed = same.replace("blue", "green");
    let out = k.run_with_input(&["diff", "-f", "-"], &changed).await;
    assert_eq!(out.code, 1, "differences found: {out:?}");
    assert!(
        out.stdout.contains("-  color: blue") && out.stdout.contains("+  color: green"),
        "{out:?}"
    );
    // diff uses a server-side dry run: nothing changed.
    assert_eq!(
        k.json(&["get", "configmap", "cfg"]).await["data"]["color"],
        "blue"
    );
}

#[tokio::test]
async fn replace_and_delete_from_file() {
    let k = Cluster::start().await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: default\ndata:\n  a: \"1\"\n";
    k.run_with_input(&["create", "-f", "-"], cm).await;
    let out = k
        .run_with_input(&["replace", "-f", "-"], &cm.replace("\"1\"", "\"2\""))
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("configmap/cfg replaced"), "{out:?}");
    assert_eq!(k.json(&["get", "configmap", "cfg"]).await["data"]["a"], "2");

    // A whole bundle, namespace included, goes away with `delete -f` (which waits). The
    // namespace's content may already be gone when kubectl reaches it (the sim's namespace
    // controller is fast), hence --ignore-not-found.
    let file = k.file("bundle.yaml", &bundle("blue"));
    let file = file.to_str().unwrap();
    if k.run(&["apply", "-f", file]).await.code != 0 {
        k.ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=15s",
            "crd/gadgets.kubectl.kube-sim.dev",
        ])
        .await;
        k.ok(&["apply", "-f", file]).await;
    }
    let out = k
        .ok(&["delete", "-f", file, "--timeout=15s", "--ignore-not-found"])
        .await;
    assert!(out.contains("namespace \"shop\" deleted"), "{out}");
    assert_eq!(
        k.run(&["get", "namespace", "shop"]).await.code,
        1,
        "namespace gone after delete --wait"
    );
    assert_eq!(
        k.run(&["get", "crd", "gadgets.kubectl.kube-sim.dev"])
            .await
            .code,
        1
    );
}

#[tokio::test]
async fn all_namespaces_all_and_custom_columns() {
    let k = Cluster::start().await;
    k.ok(&["create", "namespace", "other"]).await;
    k.ok(&["create", "configmap", "here", "--from-literal=a=1"])
        .await;
    k.ok(&["create", "configmap", "there", "-n", "other"]).await;
    let all = k.ok(&["get", "configmaps", "-A"]).await;
    assert!(
        all.lines()
            .next()
            .unwrap_or_default()
            .starts_with("NAMESPACE"),
        "{all}"
    );
    assert!(has_row(&all, &["default", "here", "1"]), "{all}");
    assert!(has_row(&all, &["other", "there", "0"]), "{all}");

    k.ok(&["create", "deployment", "web", "--image=nginx"])
        .await;
    let out = k.ok(&["get", "all"]).await;
    assert!(
        out.contains("deployment.apps/web"),
        "`get all` uses the `all` category: {out}"
    );

    let cols = k
        .ok(&[
            "get",
            "configmaps",
            "-o",
            "custom-columns=NAME:.metadata.name,NS:.metadata.namespace",
            "--sort-by=.metadata.name",
        ])
        .await;
    assert!(has_row(&cols, &["here", "default"]), "{cols}");
}

#[tokio::test]
async fn raw_requests_and_health() {
    let k = Cluster::start().await;
    for path in ["/healthz", "/readyz", "/livez"] {
        let out = k.ok(&["get", "--raw", path]).await;
        assert_eq!(out.trim(), "ok", "{path}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "--raw", "/api/v1/namespaces/default"]).await).unwrap();
    assert_eq!(v["kind"], "Namespace");
}

#[tokio::test]
async fn auth_can_i_and_whoami() {
    let k = Cluster::start().await;
    let out = k.run(&["auth", "can-i", "create", "deployments"]).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "yes"), "{out:?}");
    let out = k.ok(&["auth", "whoami", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "admin", "{v}");
}

#[tokio::test]
async fn create_from_file_with_generate_name() {
    let k = Cluster::start().await;
    let obj =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\n  namespace: default\n";
    let out = k
        .run_with_input(&["create", "-f", "-", "-o", "name"], obj)
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let name = out.stdout.trim();
    assert!(
        name.starts_with("configmap/gen-") && name.len() > "configmap/gen-".len(),
        "{name}"
    );
}

#[tokio::test]
async fn chunked_table_lists_and_rollout_restart() {
    let k = Cluster::start().await;
    for i in 0..5 {
        k.ok(&["create", "configmap", &format!("chunk-{i}")]).await;
    }
    // Tables fetched one item per request still show every row (continue tokens on Tables).
    let out = k
        .ok(&[
            "get",
            "configmaps",
            "--chunk-size=1",
            "--no-headers",
            "-o",
            "name",
        ])
        .await;
    let names: Vec<&str> = out.lines().filter(|l| l.contains("chunk-")).collect();
    assert_eq!(names.len(), 5, "{out}");
    let table = k.ok(&["get", "configmaps", "--chunk-size=2"]).await;
    assert_eq!(
        table.lines().filter(|l| l.starts_with("chunk-")).count(),
        5,
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.starts_with("NAME")).count(),
        1,
        "one header: {table}"
    );

    k.ok(&["create", "deployment", "web", "--image=nginx"])
        .await;
    let out = k.ok(&["rollout", "restart", "deployment/web"]).await;
    assert!(out.contains("restarted"), "{out}");
    let d = k.json(&["get", "deployment", "web"]).await;
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    assert_eq!(d["metadata"]["generation"], 2);
}
