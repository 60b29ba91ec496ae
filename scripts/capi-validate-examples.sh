#!/usr/bin/env bash
# Renders both phases of every examples/*.yaml with the real CLI and checks the result
# against the upstream Cluster API, CAPV and Flux CRDs: capi-validate must report 0 invalid.
#
# Env: MANAGER (default target/debug/fledge-manager), CAPI_VALIDATE (default
# ../shared/tools/capi-validate). Run from anywhere; paths are relative to the repository.
# crates/core/tests/capi_validate.rs makes the same check through the library, add-ons
# included; this script checks what users get from the binary.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manager="${MANAGER:-target/debug/fledge-manager}"
validator="${CAPI_VALIDATE:-$root/../shared/tools/capi-validate}"
cd "$root"

[[ -x "$manager" ]] || { echo "capi-validate-examples: $manager not built (run: cargo build -p fledge-manager)" >&2; exit 1; }
[[ -f "$validator" ]] || { echo "capi-validate-examples: validator not found at $validator (set CAPI_VALIDATE)" >&2; exit 1; }

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

files=()
for example in examples/*.yaml; do
  for phase in bootstrap full; do
    rendered="$out/$(basename "$example" .yaml).$phase.yaml"
    "$manager" render -f "$example" --phase "$phase" >"$rendered"
    [[ -s "$rendered" ]] || { echo "capi-validate-examples: $example --phase $phase rendered nothing" >&2; exit 1; }
    files+=("$rendered")
  done
done

# One run for all files: loading the CRDs is most of the validator's time.
report="$(python3 "$validator" "${files[@]}")" || { echo "$report"; exit 1; }
echo "$report"
summary="$(tail -n 1 <<<"$report")"
[[ "$summary" == *" 0 invalid"* ]] || { echo "capi-validate-examples: invalid objects" >&2; exit 1; }
echo "capi-validate-examples: ${#files[@]} streams (examples x {bootstrap, full}) are valid"
