//! `kubectl patch`, `label`, `annotate`, `scale`, `delete --wait` and `wait`.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::manifests::{GADGET_CRD, gadget};
use crate::support::Cluster;

#[tokio::test]
async fn patch_merge_json_and_strategic() {
    let k = Cluster::start().await;
    k.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ])
    .await;
    let out = k
        .ok(&[
            "patch",
            "configmap",
            "cfg",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"a":"10","b":null}}"#,
        ])
        .await;
    assert!(out.contains("configmap/cfg patched"), "{out}");
    let cm = k.json(&["get", "configmap", "cfg"]).await;
    assert_eq!(cm["data"], json!({"a": "10"}));

    k.ok(&[
        "patch",
        "configmap",
        "cfg",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/c","value":"3"}]"#,
    ])
    .await;
    assert_eq!(k.json(&["get", "configmap", "cfg"]).await["data"]["c"], "3");
    // A failing JSON patch test reports an error and changes nothing.
    let bad = k
        .run(&[
            "patch",
            "configmap",
            "cfg",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/data/c","value":"x"},{"op":"remove","path":"/data/c"}]"#,
        ])
        .await;
    assert_ne!(bad.code, 0, "{bad:?}");
    assert_eq!(k.json(&["get", "configmap", "cfg"]).await["data"]["c"], "3");

    k.ok(&["create", "deployment", "web", "--image=nginx:1.27"])
        .await;
    let sidecar =
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1"}]}}}}"#;
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "strategic",
        "-p",
        sidecar,
    ])
    .await;
    let d = k.json(&["get", "deployment", "web"]).await;
    let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "strategic merge keeps the existing container: {names:?}"
    );
    assert!(
        names.contains(&"nginx") && names.contains(&"sidecar"),
        "{names:?}"
    );
    // The default patch type for built-ins is strategic.
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}"#,
    ])
    .await;
    let d = k.json(&["get", "deployment", "web"]).await;
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2);
    assert!(
        containers
            .iter()
            .any(|c| c["name"] == "nginx" && c["image"] == "nginx:1.28"),
        "{containers:?}"
    );
}

#[tokio::test]
async fn label_and_annotate() {
    let k = Cluster::start().await;
    k.ok(&["create", "configmap", "cfg"]).await;
    k.ok(&["label", "configmap", "cfg", "env=prod", "team=a"])
        .await;
    let conflict = k.run(&["label", "configmap", "cfg", "env=dev"]).await;
    assert_ne!(
        conflict.code, 0,
        "changing a label needs --overwrite: {conflict:?}"
    );
    k.ok(&["label", "configmap", "cfg", "env=dev", "--overwrite"])
        .await;
    k.ok(&["label", "configmap", "cfg", "team-"]).await;
    let cm = k.json(&["get", "configmap", "cfg"]).await;
    assert_eq!(cm["metadata"]["labels"], json!({"env": "dev"}));
    let sel = k
        .ok(&["get", "configmaps", "-l", "env in (dev,qa)", "-o", "name"])
        .await;
    assert_eq!(sel.trim(), "configmap/cfg");

    k.ok(&[
        "annotate",
        "configmap",
        "cfg",
        "example.com/note=hello world",
    ])
    .await;
    let cm = k.json(&["get", "configmap", "cfg"]).await;
    assert_eq!(
        cm["metadata"]["annotations"]["example.com/note"],
        "hello world"
    );
    k.ok(&["annotate", "configmap", "cfg", "example.com/note-"])
        .await;
    let cm = k.json(&["get", "configmap", "cfg"]).await;
    assert!(
        cm["metadata"]["annotations"]
            .get("example.com/note")
            .is_none(),
        "{cm}"
    );
}

#[tokio::test]
async fn scale_a_custom_resource() {
    let k = Cluster::start().await;
    k.ok(&[
        "apply",
        "-f",
        k.file("crd.yaml", GADGET_CRD).to_str().unwrap(),
    ])
    .await;
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=15s",
        "crd/gadgets.kubectl.kube-sim.dev",
    ])
    .await;
    k.ok(&[
        "apply",
        "-f",
        k.file("g.yaml", &gadget("g1", "red", 1)).to_str().unwrap(),
    ])
    .await;
    let out = k.ok(&["scale", "gadget/g1", "--replicas=4"]).await;
    assert!(out.contains("scaled"), "{out}");
    let g = k.json(&["get", "gadget", "g1"]).await;
    assert_eq!(g["spec"]["replicas"], 4);
    // --current-replicas is a precondition.
    let stale = k
        .run(&["scale", "gadget/g1", "--current-replicas=2", "--replicas=5"])
        .await;
    assert_ne!(stale.code, 0, "{stale:?}");
    assert_eq!(
        k.json(&["get", "gadget", "g1"]).await["spec"]["replicas"],
        4
    );
    // Deployments scale through their built-in scale subresource.
    k.ok(&["create", "deployment", "web", "--image=nginx"])
        .await;
    k.ok(&["scale", "deployment/web", "--replicas=3"]).await;
    assert_eq!(
        k.json(&["get", "deployment", "web"]).await["spec"]["replicas"],
        3
    );
}

#[tokio::test]
async fn delete_waits_for_finalizers() {
    let k = Cluster::start().await;
    k.ok(&["create", "configmap", "plain"]).await;
    let out = k
        .ok(&[
            "delete",
            "configmap",
            "plain",
            "--wait=true",
            "--timeout=15s",
        ])
        .await;
    assert!(out.contains("configmap \"plain\" deleted"), "{out}");
    assert_eq!(k.run(&["get", "configmap", "plain"]).await.code, 1);

    // With a finalizer, `delete --wait` blocks until something removes it.
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: default\n  finalizers: [example.com/hold]\n";
    k.run_with_input(&["create", "-f", "-"], held).await;
    let api: Api<ConfigMap> = Api::namespaced(k.client.clone(), "default");
    let release = async {
        crate::support::wait_for("kubectl to mark the object deleted", async || {
            api.get("held")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .map(|_| ())
        })
        .await;
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    };
    let (out, ()) = tokio::join!(
        k.run(&[
            "delete",
            "configmap",
            "held",
            "--wait=true",
            "--timeout=15s"
        ]),
        release
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("deleted"), "{out:?}");
    assert!(
        api.get_opt("held").await.unwrap().is_none(),
        "delete --wait returned only after the object was gone"
    );
}

#[tokio::test]
async fn wait_for_condition_and_jsonpath() {
    let k = Cluster::start().await;
    k.ok(&[
        "apply",
        "-f",
        k.file("crd.yaml", GADGET_CRD).to_str().unwrap(),
    ])
    .await;
    let out = k
        .ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=15s",
            "crd/gadgets.kubectl.kube-sim.dev",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
    k.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Active",
        "--timeout=15s",
        "namespace/default",
    ])
    .await;

    // A jsonpath wait that becomes true later.
    k.ok(&["create", "configmap", "flag", "--from-literal=ready=no"])
        .await;
    let api: Api<ConfigMap> = Api::namespaced(k.client.clone(), "default");
    let waiter = k.run(&[
        "wait",
        "--for=jsonpath={.data.ready}=yes",
        "--timeout=15s",
        "configmap/flag",
    ]);
    let flip = async {
        api.patch(
            "flag",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"ready": "yes"}})),
        )
        .await
        .unwrap();
    };
    let (out, ()) = tokio::join!(waiter, flip);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("condition met"), "{out:?}");

    // A wait that cannot be met times out with an error.
    let never = k
        .run(&[
            "wait",
            "--for=jsonpath={.data.ready}=never",
            "--timeout=1s",
            "configmap/flag",
        ])
        .await;
    assert_ne!(never.code, 0, "{never:?}");
    // `--for=delete` returns once the object is gone.
    k.ok(&["delete", "configmap", "flag", "--wait=false"]).await;
    k.ok(&["wait", "--for=delete", "--timeout=15s", "configmap/flag"])
        .await;
}
