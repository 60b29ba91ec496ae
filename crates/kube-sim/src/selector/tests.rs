use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[track_caller]
fn check_label(selector: &str, set: &[(&str, &str)], want: bool) {
    let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
    assert_eq!(
        parsed.matches(&labels(set)),
        want,
        "{selector:?} on {set:?}"
    );
}

#[test]
fn label_operators_table() {
    let app_web = &[("app", "web"), ("tier", "front"), ("n", "5")][..];
    let none: &[(&str, &str)] = &[];
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: &[Case] = &[
        ("", none, true),
        ("  ", app_web, true),
        ("app=web", app_web, true),
        ("app==web", app_web, true),
        ("app=db", app_web, false),
        ("app!=db", app_web, true),
        ("app!=web", app_web, false),
        ("missing!=x", app_web, true),
        ("app in (db, web)", app_web, true),
        ("app in (db)", app_web, false),
        ("missing in (db)", app_web, false),
        ("app notin (db,cache)", app_web, true),
        ("app notin (web)", app_web, false),
        ("missing notin (web)", app_web, true),
        ("app", app_web, true),
        ("missing", app_web, false),
        ("!missing", app_web, true),
        ("!app", app_web, false),
        ("n>4", app_web, true),
        ("n>5", app_web, false),
        ("n<6", app_web, true),
        ("app>1", app_web, false),
        ("app=web,tier=front", app_web, true),
        ("app=web,tier=back", app_web, false),
        ("app = web , tier in (front) , !gone", app_web, true),
        ("empty=", &[("empty", "")], true),
        ("empty=", app_web, false),
        ("x in ()", &[("x", "")], true),
        ("example.com/role=a", &[("example.com/role", "a")], true),
        ("app=web,", app_web, true),
    ];
    for (sel, set, want) in cases {
        check_label(sel, set, *want);
    }
}

#[test]
fn label_selector_parses_requirements() {
    let s = LabelSelector::parse("a in (x,y),!b,c").unwrap_or_default();
    assert_eq!(
        s.requirements(),
        &[
            LabelRequirement {
                key: "a".into(),
                operator: LabelOperator::In,
                values: vec!["x".into(), "y".into()]
            },
            LabelRequirement {
                key: "b".into(),
                operator: LabelOperator::DoesNotExist,
                values: vec![]
            },
            LabelRequirement {
                key: "c".into(),
                operator: LabelOperator::Exists,
                values: vec![]
            },
        ]
    );
    assert!(LabelSelector::parse("").is_ok_and(|s| s.is_empty()));
}

#[test]
fn invalid_label_selectors_are_errors() {
    for bad in [
        "a b",
        "=x",
        "a in x",
        "a in (x",
        "a in (x y)",
        "!a=b",
        "a>b",
        "a<",
        "a=b=c",
        "a=(b)",
        "-bad=x",
        "a=-bad-",
        "a=b,,c=d",
        &format!("a={}", "v".repeat(64)),
        "a=b)",
    ] {
        let err = LabelSelector::parse(bad).err();
        assert!(
            matches!(err, Some(SelectorError::Label(_))),
            "{bad:?} parsed: {err:?}"
        );
    }
}

#[test]
fn label_selector_from_object_form() {
    let s = LabelSelector::from_label_selector_object(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}, {"key": "x", "operator": "DoesNotExist"}]
    }))
    .unwrap_or_default();
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("x", "1")])));
    assert!(
        LabelSelector::from_label_selector_object(
            &json!({"matchExpressions": [{"key": "a", "operator": "Gte"}]})
        )
        .is_err()
    );
}

#[test]
fn matches_object_reads_metadata_labels() {
    let s = LabelSelector::parse("app=web").unwrap_or_default();
    assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
    assert!(!s.matches_object(&json!({"metadata": {}})));
}

#[test]
fn field_selector_table() {
    let pod = json!({
        "metadata": {"name": "p1", "namespace": "ns1"},
        "spec": {"nodeName": "node-a", "schedulerName": "default-scheduler"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]}
    });
    let event = json!({
        "metadata": {"name": "e1", "namespace": "ns1"},
        "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "ns1", "uid": "u-1"},
        "type": "Warning",
        "reason": "BackOff",
        "source": {"component": "kubelet"}
    });
    let new_event = json!({"metadata": {"name": "e2"}, "regarding": {"kind": "Pod", "name": "p1"}, "reportingController": "kubelet"});
    let cases = [
        ("", &pod, true),
        ("metadata.name=p1", &pod, true),
        ("metadata.name==p1", &pod, true),
        ("metadata.name!=p1", &pod, false),
        ("metadata.namespace=ns1,metadata.name=p1", &pod, true),
        ("metadata.namespace=ns2,metadata.name=p1", &pod, false),
        ("spec.nodeName=node-a", &pod, true),
        ("spec.nodeName=", &pod, false),
        ("spec.nodeName=", &event, true),
        ("spec.hostNetwork=false", &pod, true),
        ("status.phase!=Pending", &pod, true),
        ("status.podIPs=10.0.0.5", &pod, true),
        (
            "involvedObject.kind=Pod,involvedObject.name=p1",
            &event,
            true,
        ),
        ("involvedObject.uid=u-1", &event, true),
        ("involvedObject.uid=u-2", &event, false),
        ("type=Warning,reason=BackOff", &event, true),
        ("source=kubelet", &event, true),
        (
            "involvedObject.name=p1,reportingComponent=kubelet",
            &new_event,
            true,
        ),
        ("status.replicas=0", &pod, true),
    ];
    for (sel, obj, want) in cases {
        let parsed = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
        assert_eq!(parsed.matches(obj), want, "{sel:?}");
    }
}

#[test]
fn field_selector_escapes() {
    let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap_or_default();
    assert_eq!(s.requirements()[0].value, r"a,b=c\d");
    assert!(s.matches(&json!({"metadata": {"name": r"a,b=c\d"}})));
}

#[test]
fn invalid_field_selectors_are_errors() {
    for bad in ["metadata.name", "a=b=c", r"a=b\x", "a=b\\", "foo,bar=1"] {
        let err = FieldSelector::parse(bad).err();
        assert!(
            matches!(err, Some(SelectorError::Field(_))),
            "{bad:?} parsed: {err:?}"
        );
    }
    assert_eq!(
        FieldSelector::parse("metadata.name")
            .err()
            .map(|e| e.to_string()),
        Some("invalid selector: 'metadata.name'; can't understand 'metadata.name'".to_string())
    );
}

#[test]
fn unsupported_fields_are_rejected_per_resource() {
    let pods = FieldSelector::parse("spec.nodeName=a,metadata.name=x").unwrap_or_default();
    assert_eq!(pods.check_supported("", "pods", &[]), Ok(()));
    assert_eq!(
        pods.check_supported("", "configmaps", &[]),
        Err(SelectorError::UnsupportedField("spec.nodeName".into()))
    );
    assert_eq!(
        pods.check_supported("", "configmaps", &[])
            .err()
            .map(|e| e.to_string()),
        Some("field label not supported: spec.nodeName".to_string())
    );
    let ev = FieldSelector::parse("involvedObject.name=x,type=Normal").unwrap_or_default();
    assert_eq!(ev.check_supported("", "events", &[]), Ok(()));
    assert_eq!(ev.check_supported("events.k8s.io", "events", &[]), Ok(()));
    let crd = FieldSelector::parse("spec.color=red").unwrap_or_default();
    assert!(crd.check_supported("example.com", "widgets", &[]).is_err());
    assert_eq!(
        crd.check_supported("example.com", "widgets", &[".spec.color".to_string()]),
        Ok(())
    );
    let secret =
        FieldSelector::parse("type=kubernetes.io/service-account-token").unwrap_or_default();
    assert_eq!(secret.check_supported("", "secrets", &[]), Ok(()));
    assert!(secret.matches(&json!({"type": "kubernetes.io/service-account-token"})));
}
