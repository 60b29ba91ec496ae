//! Defaulting and immutability rules of built-in types that clients observe: what
//! kube-apiserver fills in (Deployment strategy, pod template policies, Service cluster IPs…)
//! and which fields it refuses to change.
//!
//! Only the defaults clients commonly read are applied; each applies only to absent fields, on
//! every write, as the real decoder defaults every object it reads.

use serde_json::{Value, json};

use crate::schema::Cause;

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if obj.is_object() && obj[key].is_null() {
        obj[key] = value;
    }
}

/// Container defaults (`imagePullPolicy` depends on the tag, as in kube's defaulting).
fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default().to_owned();
    let last = image.rsplit('/').next().unwrap_or_default();
    let tagged = last.contains(':') || image.contains('@');
    let latest = last.ends_with(":latest");
    let policy = if !tagged || latest {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c["ports"].as_array_mut() {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Pod spec defaults (pods and pod templates).
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec[list].as_array_mut() {
            for c in cs {
                container(c);
            }
        }
    }
}

/// Workload defaults (apps/v1).
pub fn workload(resource: &str, obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    match resource {
        "deployments" => {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(spec, "strategy", json!({}));
            let strategy = &mut spec["strategy"];
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                set_default(strategy, "rollingUpdate", json!({}));
                set_default(
                    &mut strategy["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
                set_default(&mut strategy["rollingUpdate"], "maxSurge", json!("25%"));
            }
        }
        "replicasets" => set_default(spec, "replicas", json!(1)),
        "statefulsets" => {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
        }
        "daemonsets" => {
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
        }
        _ => {}
    }
    pod_spec(&mut spec["template"]["spec"]);
}

/// Service defaults; `allocate_ip` gives the next free cluster IP.
pub fn service(obj: &mut Value, old: Option<&Value>, allocate_ip: &mut dyn FnMut() -> String) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or_default().to_owned();
    if ty != "ExternalName" {
        if spec["clusterIP"].is_null() {
            // Cluster IPs are immutable: keep the allocated one across updates.
            let ip = old
                .and_then(|o| o["spec"]["clusterIP"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(&mut *allocate_ip);
            spec["clusterIP"] = json!(ip);
        }
        if spec["clusterIPs"].is_null() {
            spec["clusterIPs"] = json!([spec["clusterIP"]]);
        }
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
}

/// Fields kube-apiserver refuses to change on update.
pub fn immutable(group: &str, resource: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let forbid = |causes: &mut Vec<Cause>, field: &str, message: String| {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message,
            field: field.into(),
        });
    };
    match (group, resource) {
        ("", "configmaps" | "secrets") => {
            if old["immutable"] == true {
                for field in ["data", "binaryData"] {
                    if old[field] != new[field] {
                        forbid(
                            &mut causes,
                            field,
                            "Forbidden: field is immutable when `immutable` is set".into(),
                        );
                    }
                }
                if new["immutable"] != true {
                    forbid(
                        &mut causes,
                        "immutable",
                        "Forbidden: field is immutable when `immutable` is set".into(),
                    );
                }
            }
            if resource == "secrets" && old["type"] != new["type"] {
                causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {}: field is immutable", new["type"]),
                    field: "type".into(),
                });
            }
        }
        ("", "services") => {
            let old_ip = &old["spec"]["clusterIP"];
            if old_ip.is_string()
                && new["spec"]["clusterIP"] != *old_ip
                && new["spec"]["type"] != "ExternalName"
            {
                causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {}: field is immutable",
                        new["spec"]["clusterIP"]
                    ),
                    field: "spec.clusterIP".into(),
                });
            }
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_follow_kubernetes() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "nginx:1.27"}, {"name": "b", "image": "busybox"}, {"name": "c", "image": "x:latest"}]}}}});
        workload("deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let cs = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(cs[1]["imagePullPolicy"], "Always");
        assert_eq!(cs[2]["imagePullPolicy"], "Always");
        assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn services_get_a_stable_cluster_ip() {
        let mut n = 0;
        let mut alloc = || {
            n += 1;
            format!("10.96.0.{n}")
        };
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        service(&mut s, None, &mut alloc);
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        let old = s.clone();
        let mut updated = json!({"spec": {"ports": [{"port": 81}]}});
        service(&mut updated, Some(&old), &mut alloc);
        assert_eq!(updated["spec"]["clusterIP"], "10.96.0.1");
    }

    #[test]
    fn immutable_configmaps_reject_data_changes() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(immutable("", "configmaps", &old, &new)[0].field, "data");
        assert!(immutable("", "configmaps", &old, &old).is_empty());
    }
}
