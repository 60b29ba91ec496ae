#!/usr/bin/env bash
# `make demo` as a test (make test runs it): the demo must exit 0 and leave no process of its
# own behind (every process it starts carries its state directory, fledge-demo.*, in its
# command line).
set -euo pipefail
cd "$(dirname "$0")/.."
before=$(pgrep -f 'fledge-demo\.' || true)
out=$(mktemp)
if ! KEEP=0 scripts/demo.sh > "$out" 2>&1; then
  cat "$out" >&2
  echo "demo-test: make demo failed" >&2
  exit 1
fi
for step in "Creating edge-1" "no longer holds" "Killing the manager" "MachineHealthCheck replaced" \
            "status catches up" "Scaling pool general" "Deleting edge-1"; do
  grep -q "$step" "$out" || { cat "$out" >&2; echo "demo-test: step '$step' missing" >&2; exit 1; }
done
# Processes may take a moment to be reaped after SIGTERM.
for _ in $(seq 1 50); do
  after=$(pgrep -f 'fledge-demo\.' || true)
  [[ "$after" == "$before" ]] && break
  sleep 0.2
done
if [[ "$after" != "$before" ]]; then
  ps -o pid,args -p "$(echo $after | tr ' ' ',')" >&2 || true
  echo "demo-test: the demo left processes behind" >&2
  exit 1
fi
echo "demo-test: make demo passed in $(grep -c '' "$out") lines of output, no process left behind"
rm -f "$out"
