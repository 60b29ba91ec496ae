//! RFC 7386 JSON merge patch (`application/merge-patch+json`).

use serde_json::Value;

/// Applies an RFC 7386 JSON merge patch to `target` in place.
///
/// Objects are merged recursively, `null` removes a member, any other value (arrays
/// included) replaces the target value; a non-object patch replaces the whole target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7386 appendix A.
    #[test]
    fn rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge_patch(&mut t, &patch);
            assert_eq!(t, want, "target {target} patch {patch}");
        }
    }

    #[test]
    fn kubectl_scale_and_label_shapes() {
        let mut d =
            json!({"metadata":{"name":"x","labels":{"a":"1"}},"spec":{"replicas":1,"template":{}}});
        merge_patch(&mut d, &json!({"spec":{"replicas":3}}));
        merge_patch(&mut d, &json!({"metadata":{"labels":{"a":null,"b":"2"}}}));
        assert_eq!(
            d,
            json!({"metadata":{"name":"x","labels":{"b":"2"}},"spec":{"replicas":3,"template":{}}})
        );
    }
}
