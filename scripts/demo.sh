#!/usr/bin/env bash
# `make demo`: walks through what Fledge does with examples/edge-1.yaml.
# Today the manager and the simulated world are still being built, so the demo shows the
# offline half of the pipeline: validation with field paths, and the Cluster API objects the
# manager creates (bootstrap) and the agent maintains (full).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/fledge-manager
example=examples/edge-1.yaml
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Validating $example (every problem would be listed with its field path, exit code 2)"
$bin validate -f "$example"

say "A broken spec is rejected with one 'path: reason' line per problem"
broken=$(mktemp)
trap 'rm -f "$broken"' EXIT
sed -e 's/replicas: 3/replicas: 2/' -e 's/port: 6443/port: 70000/' "$example" > "$broken"
if $bin validate -f "$broken"; then echo "expected a failure" >&2; exit 1; else echo "(exit code $?)"; fi

say "Bootstrap phase: what the manager applies to the management cluster to get the first control-plane node"
$bin render -f "$example" --phase bootstrap | grep -E '^(kind|  name):' | paste - - | sed 's/^/   /'

say "Full phase: the end state the agent keeps inside the workload cluster after the pivot"
$bin render -f "$example" --phase full | grep -E '^(kind|  name):' | paste - - | sed 's/^/   /'

say "Both phases are checked against the upstream Cluster API v1.14 / CAPV v1.17 CRDs"
CAPI_VALIDATE=${CAPI_VALIDATE:-../shared/tools/capi-validate} MANAGER=$bin scripts/capi-validate-examples.sh

say "Done. Explore: $bin render -f $example --phase full | less"
