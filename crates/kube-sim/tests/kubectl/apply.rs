//! `kubectl apply`, client-side and server-side, of a multi-object file.

use crate::manifests::{GADGET_CRD, bundle};
use crate::support::{Cluster, Output};

/// Applies `file` with `extra` flags. A custom object in the same file as its CRD can only be
/// mapped once the CRD is Established (real clusters behave the same), so a first attempt may
/// fail on it alone; the second must succeed.
async fn apply_bundle(k: &Cluster, file: &str, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "-f", file];
    args.extend(extra);
    let first = k.run(&args).await;
    if first.code == 0 {
        return first;
    }
    // Only the custom object may fail: everything before it went through.
    for applied in [
        "namespace/shop",
        "configmap/settings",
        "deployment.apps/web",
        "customresourcedefinition.apiextensions.k8s.io/gadgets",
    ] {
        assert!(
            first.stdout.contains(applied),
            "{applied} applied on the first attempt: {first:?}"
        );
    }
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=15s",
        "crd/gadgets.kubectl.kube-sim.dev",
    ])
    .await;
    let second = k.run(&args).await;
    assert_eq!(second.code, 0, "second apply: {second:?}");
    second
}

async fn assert_bundle_applied(k: &Cluster, color: &str) {
    let cm = k
        .json(&["get", "configmap", "settings", "-n", "shop"])
        .await;
    assert_eq!(cm["data"]["color"], color);
    let dep = k.json(&["get", "deployment", "web", "-n", "shop"]).await;
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let g = k.json(&["get", "gadget", "g1", "-n", "shop"]).await;
    assert_eq!(g["spec"]["color"], color);
    let ns = k.json(&["get", "namespace", "shop"]).await;
    assert_eq!(ns["status"]["phase"], "Active");
}

#[tokio::test]
async fn client_side_apply_of_a_multi_object_file() {
    let k = Cluster::start().await;
    let file = k.file("bundle.yaml", &bundle("blue"));
    let file = file.to_str().unwrap();
    apply_bundle(&k, file, &[]).await;
    assert_bundle_applied(&k, "blue").await;
    let cm = k
        .json(&["get", "configmap", "settings", "-n", "shop"])
        .await;
    assert!(
        cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "client-side apply records last-applied-configuration: {cm}"
    );

    // Re-applying the same file changes nothing; a changed file is configured.
    let again = k.ok(&["apply", "-f", file]).await;
    assert!(again.contains("configmap/settings unchanged"), "{again}");
    let changed = k.file("bundle2.yaml", &bundle("green"));
    let out = k.ok(&["apply", "-f", changed.to_str().unwrap()]).await;
    assert!(out.contains("configmap/settings configured"), "{out}");
    assert_bundle_applied(&k, "green").await;
}

#[tokio::test]
async fn server_side_apply_of_a_multi_object_file() {
    let k = Cluster::start().await;
    let file = k.file("bundle.yaml", &bundle("blue"));
    let file = file.to_str().unwrap();
    let out = apply_bundle(&k, file, &["--server-side"]).await;
    assert!(out.stdout.contains("serverside-applied"), "{out:?}");
    assert_bundle_applied(&k, "blue").await;
    let cm = k
        .json(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "shop",
            "--show-managed-fields",
        ])
        .await;
    let mf = cm["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields");
    assert!(
        mf.iter()
            .any(|e| e["manager"] == "kubectl" && e["operation"] == "Apply"),
        "{mf:?}"
    );

    // Another manager changing an owned field conflicts; --force-conflicts takes it over.
    let changed = k.file("bundle2.yaml", &bundle("green"));
    let changed = changed.to_str().unwrap();
    let conflict = k
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=intruder",
            "-f",
            changed,
        ])
        .await;
    assert_ne!(conflict.code, 0);
    assert!(
        conflict.stderr.contains("conflict") && conflict.stderr.contains("\"kubectl\""),
        "{conflict:?}"
    );
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=intruder",
        "--force-conflicts",
        "-f",
        changed,
    ])
    .await;
    assert_bundle_applied(&k, "green").await;
}

#[tokio::test]
async fn apply_from_stdin_and_dry_run() {
    let k = Cluster::start().await;
    let out = k.run_with_input(&["apply", "-f", "-"], GADGET_CRD).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "customresourcedefinition.apiextensions.k8s.io/gadgets.kubectl.kube-sim.dev created"
        ),
        "{out:?}"
    );
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\n  namespace: default\n";
    let out = k
        .run_with_input(&["apply", "--dry-run=server", "-f", "-"], cm)
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("(server dry run)"), "{out:?}");
    let get = k.run(&["get", "configmap", "dry"]).await;
    assert_eq!(get.code, 1, "dry-run created nothing: {get:?}");
}

fn two_container_deployment(containers: &str, finalizers: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: pod-set\n  namespace: default\n  finalizers: {finalizers}\nspec:\n  selector:\n    matchLabels:\n      app: pod-set\n  template:\n    metadata:\n      labels:\n        app: pod-set\n    spec:\n      containers:\n{containers}"
    )
}

#[tokio::test]
async fn client_side_apply_removes_what_the_file_no_longer_has() {
    // Three-way strategic merge: kubectl sends `$setElementOrder`, `$patch: delete` and
    // `$deleteFromPrimitiveList` directives computed from last-applied-configuration.
    let k = Cluster::start().await;
    let both = "      - name: app\n        image: app:1\n        env:\n        - name: A\n          value: a\n        - name: B\n          value: b\n      - name: sidecar\n        image: sidecar:1\n";
    let out = k
        .run_with_input(
            &["apply", "-f", "-"],
            &two_container_deployment(both, "[example.com/a, example.com/b]"),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let one = "      - name: app\n        image: app:2\n        env:\n        - name: A\n          value: a\n";
    let out = k
        .run_with_input(
            &["apply", "-f", "-"],
            &two_container_deployment(one, "[example.com/a]"),
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let d = k.json(&["get", "deployment", "pod-set"]).await;
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(containers[0]["image"], "app:2");
    let env: Vec<&str> = containers[0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(env, ["A"]);
    assert_eq!(
        d["metadata"]["finalizers"],
        serde_json::json!(["example.com/a"])
    );
    // Release the finalizer so the cluster can be torn down cleanly.
    k.ok(&[
        "patch",
        "deployment",
        "pod-set",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
}
