//! RFC 6902 JSON patch (`application/json-patch+json`).

use super::PatchError;
use serde_json::Value;

/// The Kubernetes API server refuses JSON patches with more operations than this.
const MAX_OPERATIONS: usize = 10_000;

/// Applies an RFC 6902 JSON patch to `target`.
///
/// Atomic: on any error (including a failed `test` operation) `target` is left unchanged.
/// A malformed patch document is [`PatchError::BadRequest`]; an operation that cannot be
/// applied is [`PatchError::Unprocessable`], as with the real API server.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::BadRequest(format!("invalid JSON patch: {e}")))?;
    if ops.0.len() > MAX_OPERATIONS {
        return Err(PatchError::Unprocessable(format!(
            "The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {}",
            ops.0.len()
        )));
    }
    // Work on a copy so that a failure in the middle leaves the target untouched without
    // relying on the crate's undo log.
    let mut doc = target.clone();
    for op in &ops.0 {
        // The apiserver's JSON patch library treats a missing path as `null` in a `test`
        // operation, and kube-runtime's finalizer helper relies on it (it tests
        // `/metadata/finalizers` for null before adding the first finalizer).
        if let json_patch::PatchOperation::Test(test) = op
            && test.value.is_null()
            && doc.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op))
            .map_err(|e| PatchError::Unprocessable(e.to_string()))?;
    }
    *target = doc;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(doc: Value, patch: Value) -> Result<Value, (PatchError, Value)> {
        let mut d = doc;
        match json_patch(&mut d, &patch) {
            Ok(()) => Ok(d),
            Err(e) => Err((e, d)),
        }
    }

    /// RFC 6902 appendix A, successful cases.
    #[test]
    fn test_of_null_passes_on_a_missing_path_and_fails_on_a_present_one() {
        let mut doc = json!({"metadata": {"name": "a"}});
        json_patch(
            &mut doc,
            &json!([{"op":"test","path":"/metadata/finalizers","value":null},
                    {"op":"add","path":"/metadata/finalizers","value":["x"]}]),
        )
        .unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["x"]));
        let before = doc.clone();
        let err = json_patch(
            &mut doc,
            &json!([{"op":"test","path":"/metadata/finalizers","value":null}]),
        );
        assert!(err.is_err(), "a present value is not null");
        assert_eq!(doc, before);
    }

    #[test]
    fn rfc6902_appendix_a() {
        let cases = [
            // A.1 .. A.10
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}]),
                json!({"foo":"bar","baz":"qux"}),
            ),
            (
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}]),
                json!({"foo":["bar","qux","baz"]}),
            ),
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}]),
                json!({"foo":"bar"}),
            ),
            (
                json!({"foo":["bar","qux","baz"]}),
                json!([{"op":"remove","path":"/foo/1"}]),
                json!({"foo":["bar","baz"]}),
            ),
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}]),
                json!({"baz":"boo","foo":"bar"}),
            ),
            (
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]),
                json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}),
            ),
            (
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}]),
                json!({"foo":["all","cows","eat","grass"]}),
            ),
            (
                json!({"baz":"qux","foo":["a",2,"c"]}),
                json!([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]),
                json!({"baz":"qux","foo":["a",2,"c"]}),
            ),
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/child","value":{"grandchild":{}}}]),
                json!({"foo":"bar","child":{"grandchild":{}}}),
            ),
            // A.11 ignoring unrecognized elements
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux","xyz":123}]),
                json!({"foo":"bar","baz":"qux"}),
            ),
            // A.14 ~ escaping
            (
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":10}]),
                json!({"/":9,"~1":10}),
            ),
            // A.16 adding an array value
            (
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}]),
                json!({"foo":["bar",["abc","def"]]}),
            ),
            // copy
            (
                json!({"a":{"b":1}}),
                json!([{"op":"copy","from":"/a","path":"/c"}]),
                json!({"a":{"b":1},"c":{"b":1}}),
            ),
        ];
        for (doc, patch, want) in cases {
            let got = run(doc.clone(), patch.clone());
            assert_eq!(got.map_err(|(e, _)| e), Ok(want), "doc {doc} patch {patch}");
        }
    }

    /// RFC 6902 appendix A error cases: the document is left unchanged.
    #[test]
    fn rfc6902_errors_leave_target_unchanged() {
        let cases = [
            // A.9 failed test
            (
                json!({"baz":"qux"}),
                json!([{"op":"test","path":"/baz","value":"bar"}]),
            ),
            // A.12 adding to a nonexistent target
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
            ),
            // A.15 comparing strings and numbers
            (
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":"10"}]),
            ),
            // a failing test after a successful add must roll the add back
            (
                json!({"a":1}),
                json!([{"op":"add","path":"/b","value":2},{"op":"test","path":"/a","value":5}]),
            ),
            (json!({"a":[1]}), json!([{"op":"remove","path":"/a/3"}])),
        ];
        for (doc, patch) in cases {
            let result = run(doc.clone(), patch.clone());
            assert!(result.is_err(), "patch {patch} unexpectedly succeeded");
            if let Err((e, after)) = result {
                assert_eq!(e.status_code(), 422, "{e}");
                assert_eq!(after, doc);
            }
        }
    }

    #[test]
    fn malformed_patches_are_bad_requests() {
        for patch in [
            json!({"op":"add"}),
            json!([{"op":"frobnicate","path":"/a"}]),
            json!([{"op":"add","path":"/a"}]),
        ] {
            let mut d = json!({});
            let err = json_patch(&mut d, &patch).err();
            assert_eq!(err.map(|e| e.status_code()), Some(400), "{patch}");
        }
    }
}
