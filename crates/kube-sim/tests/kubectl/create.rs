//! Imperative `kubectl create` (kubectl sends protobuf bodies for built-in types) and tokens.

use base64::Engine as _;
use serde_json::json;

use crate::support::Cluster;

#[tokio::test]
async fn create_secret_configmap_namespace_deployment() {
    let k = Cluster::start().await;
    let out = k.ok(&["create", "namespace", "team-a"]).await;
    assert!(out.contains("namespace/team-a created"), "{out}");
    assert_eq!(
        k.json(&["get", "namespace", "team-a"]).await["status"]["phase"],
        "Active"
    );

    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "team-a",
        "--from-literal=user=admin",
        "--from-literal=pass=s3cr=t",
    ])
    .await;
    let s = k.json(&["get", "secret", "creds", "-n", "team-a"]).await;
    assert_eq!(s["type"], "Opaque");
    let decode = |v: &serde_json::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(decode(&s["data"]["user"]), "admin");
    assert_eq!(decode(&s["data"]["pass"]), "s3cr=t");

    k.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "team-a",
        "--from-literal=a=1",
        "--from-literal=b=two words",
    ])
    .await;
    let cm = k.json(&["get", "configmap", "cfg", "-n", "team-a"]).await;
    assert_eq!(cm["data"], json!({"a": "1", "b": "two words"}));

    k.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "team-a",
        "--image=nginx:1.27",
        "--replicas=3",
        "--port=80",
    ])
    .await;
    let d = k.json(&["get", "deployment", "web", "-n", "team-a"]).await;
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (c["image"].as_str(), c["ports"][0]["containerPort"].as_i64()),
        (Some("nginx:1.27"), Some(80))
    );
    assert_eq!(d["metadata"]["generation"], 1);

    // These requests really carry protobuf bodies (kubectl's typed clients prefer protobuf).
    let traced = k
        .run(&[
            "create",
            "configmap",
            "probe",
            "-n",
            "team-a",
            "--from-literal=x=y",
            "-v=8",
        ])
        .await;
    assert_eq!(traced.code, 0, "{traced:?}");
    assert!(
        traced
            .stderr
            .contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "{}",
        traced.stderr
    );
    assert_eq!(
        k.json(&["get", "configmap", "probe", "-n", "team-a"]).await["data"]["x"],
        "y"
    );

    let dup = k.run(&["create", "namespace", "team-a"]).await;
    assert_eq!(dup.code, 1);
    assert!(dup.stderr.contains("AlreadyExists"), "{dup:?}");
}

#[tokio::test]
async fn create_serviceaccount_and_token() {
    let k = Cluster::start().await;
    k.ok(&["create", "serviceaccount", "robot"]).await;
    let sa = k.json(&["get", "serviceaccount", "robot"]).await;
    assert!(sa["metadata"]["uid"].is_string());
    // Every namespace gets a default ServiceAccount.
    k.ok(&["get", "serviceaccount", "default"]).await;

    let token = k.ok(&["create", "token", "robot", "--duration=10m"]).await;
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "JWT-shaped token: {token}");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:default:robot");

    // The token authenticates.
    let out = k
        .ok(&["get", "configmaps", "--token", token, "-o", "name"])
        .await;
    assert!(!out.contains("error"), "{out}");
    let bad = k
        .run(&["get", "configmaps", "--token", "not-a-valid-token"])
        .await;
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("Unauthorized") || bad.stderr.contains("must be logged in"),
        "{bad:?}"
    );

    // A token for a missing ServiceAccount is refused.
    let missing = k.run(&["create", "token", "ghost"]).await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("NotFound") || missing.stderr.contains("not found"),
        "{missing:?}"
    );
}
