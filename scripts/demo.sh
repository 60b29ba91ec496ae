#!/usr/bin/env bash
# `make demo`: walks through what Fledge does with the examples, on the embedded default:
# the simulated world (fledge-sim) and the manager (fledge-manager serve) on loopback.
#
# What exists today: validation and rendering, the simulated world, and the manager's
# pipeline up to installing the providers and the agent into the new cluster. The pivot, the
# agent itself and day-2 operations are still being built; the demo grows with them.
# Leaves no process behind unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug
example=examples/edge-1.yaml
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Validating $example (every problem would be listed with its field path, exit code 2)"
$bin/fledge-manager validate -f "$example"

say "A broken spec is rejected with one 'path: reason' line per problem"
tmp=$(mktemp -d)
pids=()
cleanup() {
  if [[ "${KEEP:-0}" != 1 ]]; then
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
sed -e 's/replicas: 3/replicas: 2/' -e 's/port: 6443/port: 70000/' "$example" > "$tmp/broken.yaml"
if $bin/fledge-manager validate -f "$tmp/broken.yaml"; then echo "expected a failure" >&2; exit 1; else echo "(exit code $?)"; fi

say "The Cluster API objects the manager creates for the first control-plane node (bootstrap phase)"
$bin/fledge-manager render -f "$example" --phase bootstrap | grep -E '^(kind|  name):' | paste - - | sed 's/^/   /'
say "... and the end state the agent keeps inside the workload cluster (full phase)"
$bin/fledge-manager render -f "$example" --phase full | grep -E '^(kind|  name):' | paste - - | sed 's/^/   /'
CAPI_VALIDATE=${CAPI_VALIDATE:-../shared/tools/capi-validate} MANAGER=$bin/fledge-manager \
  scripts/capi-validate-examples.sh | tail -n 1

say "Starting the simulated world (fledge-sim serve --speed 50) in $tmp/world"
$bin/fledge-sim serve --state-dir "$tmp/world" --speed 50 --agent-bin "$bin/fledge-agent" \
  > "$tmp/sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do [[ -f "$tmp/world/kubeconfig" ]] && break; sleep 0.2; done
[[ -f "$tmp/world/kubeconfig" ]] || { echo "fledge-sim did not start; see $tmp/sim.log" >&2; exit 1; }
export KUBECONFIG="$tmp/world/kubeconfig"
kubectl get deployments -A --no-headers | awk '{print "   provider: " $1 "/" $2}'

say "Starting the manager (self-signed TLS in $tmp/tls, one token for tenant default)"
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token default" > "$tmp/tokens"
$bin/fledge-manager serve --kubeconfig "$KUBECONFIG" --listen 127.0.0.1:0 \
  --tls-dir "$tmp/tls" --tokens "$tmp/tokens" > "$tmp/manager.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do kubectl get crd workloadclusters.fledge.dev >/dev/null 2>&1 && break; sleep 0.2; done
grep -m1 'listening on' "$tmp/manager.log" | sed 's/^/   /' || true

say "Creating examples/single-node.yaml as a WorkloadCluster (kubectl works like the gRPC API)"
kubectl create secret generic vsphere-credentials --from-literal=username=admin --from-literal=password=secret >/dev/null
kubectl apply -f examples/single-node.yaml
last=""
for _ in $(seq 1 600); do
  phase=$(kubectl get workloadcluster single-node -o jsonpath='{.status.phase}' 2>/dev/null || true)
  if [[ -n "$phase" && "$phase" != "$last" ]]; then
    printf '   %s  phase=%s\n' "$(date +%T)" "$phase"
    last=$phase
  fi
  [[ "$phase" == "InstallingAgent" || "$phase" == "Pivoting" || "$phase" == "HandedOver" || "$phase" == "Ready" ]] && break
  sleep 0.2
done
kubectl get workloadclusters,clusters,kubeadmcontrolplanes,machines -A

wc_kubeconfig="$tmp/world/clusters/default/single-node/kubeconfig"
if [[ -f "$wc_kubeconfig" ]]; then
  say "Inside the new cluster: its node, and the Cluster API providers the manager installed there"
  kubectl --kubeconfig "$wc_kubeconfig" get nodes
  kubectl --kubeconfig "$wc_kubeconfig" get deployments -A
fi

say "Next (being built): the pivot moves these CAPI objects into the cluster and the agent takes over"
if [[ "${KEEP:-0}" == 1 ]]; then
  echo "fledge-sim and fledge-manager keep running (pids ${pids[*]})."
  echo "   management kubeconfig: $KUBECONFIG"
  echo "   manager CA: $tmp/tls/ca.crt   token file: $tmp/tokens   logs: $tmp/*.log"
else
  echo "Stopping fledge-sim and the manager. Run 'make demo KEEP=1' to keep exploring."
fi
