#!/usr/bin/env bash
# `make demo`: the main job on the embedded default, narrated one line per step.
#
#   fledge-manager serve --embedded   (self-signed TLS, a generated token, and fledge-sim
#                                      started as a separate process: the simulated world)
#   cluster create -f examples/edge-1.yaml --wait     (live progress through the pivot)
#   the new cluster's nodes and CAPI objects, and an empty management cluster
#   the manager killed; a worker VM deleted; the cluster heals itself
#   the manager back; status caught up; a pool scaled; the cluster deleted (reverse pivot)
#
# Leaves no process behind unless KEEP=1 (then prints how to go on exploring).
# DEMO_SPEED sets the simulated world's speed (default 50: the demo takes about a minute after the build).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/debug
fm=$bin/fledge-manager
example=examples/edge-1.yaml
speed=${DEMO_SPEED:-50}
step=0
say() { step=$((step + 1)); printf '\n\033[1m[%d] %s\033[0m  (%ds)\n' "$step" "$*" "$SECONDS"; }
indent() { sed 's/^/    /'; }

state=$(mktemp -d "${TMPDIR:-/tmp}/fledge-demo.XXXXXX")
manager_pid=""
cleanup() {
  local status=$?
  if [[ "${KEEP:-0}" == 1 && $status == 0 ]]; then
    return
  fi
  [[ -n "$manager_pid" ]] && kill -TERM "$manager_pid" 2>/dev/null && wait "$manager_pid" 2>/dev/null
  if [[ -f "$state/sim.pid" ]]; then
    sim_pid=$(cat "$state/sim.pid")
    kill -TERM "$sim_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$sim_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$sim_pid" 2>/dev/null || true
  fi
  if [[ $status != 0 ]]; then
    echo "demo failed (exit $status); logs:" >&2
    tail -n 30 "$state"/manager*.log "$state/sim.log" >&2 2>/dev/null || true
  fi
  rm -rf "$state"
}
trap cleanup EXIT

start_manager() {
  local log=$1 listen=$2
  "$fm" serve --embedded --state-dir "$state" --sim-speed "$speed" --listen "$listen" \
    > "$state/$log.out" 2> "$state/$log.log" &
  manager_pid=$!
  for _ in $(seq 1 300); do
    grep -q '^listening on ' "$state/$log.out" 2>/dev/null && break
    kill -0 "$manager_pid" 2>/dev/null || { cat "$state/$log.log" >&2; exit 1; }
    sleep 0.2
  done
  addr=$(sed -n 's/^listening on //p' "$state/$log.out" | head -n 1)
  [[ -n "$addr" ]] || { echo "the manager did not start" >&2; exit 1; }
}

say "Checking $example (every problem would be listed with its field path, exit code 2)"
"$fm" validate -f "$example" | indent

say "Starting the manager on the embedded default: fledge-sim as its own process, TLS and a token in $state"
start_manager manager 127.0.0.1:0
export FLEDGE_SERVER="https://$addr" FLEDGE_CA_FILE="$state/tls/ca.crt" FLEDGE_TOKEN
FLEDGE_TOKEN=$(cat "$state/token")
mgmt="$state/sim/kubeconfig"
echo "manager https://$addr (pid $manager_pid), world pid $(cat "$state/sim.pid"), speed x$speed" | indent

say "Creating edge-1 (3 control-plane nodes, pools general and batch, profile standard) and following it"
"$fm" cluster create -f "$example" --wait --timeout 10m 2>&1 | indent
"$fm" cluster list | indent

say "Inside edge-1, with the kubeconfig the manager hands out: its nodes and the CAPI objects it now owns"
"$fm" cluster kubeconfig edge-1 --write "$state/edge-1.kubeconfig"
kubectl --kubeconfig "$state/edge-1.kubeconfig" get nodes | indent
kubectl --kubeconfig "$state/edge-1.kubeconfig" get kubeadmcontrolplane,machinedeployments -A | indent

say "The management cluster no longer holds edge-1's CAPI objects, only its WorkloadCluster"
kubectl --kubeconfig "$mgmt" get clusters.cluster.x-k8s.io,machines.cluster.x-k8s.io -A 2>&1 | indent
kubectl --kubeconfig "$mgmt" get workloadclusters -A | indent

say "Killing the manager (SIGKILL): edge-1 keeps managing itself"
kill -KILL "$manager_pid"; wait "$manager_pid" 2>/dev/null || true; manager_pid=""
echo "manager gone" | indent

# A node of pool general (3 machines): the MachineHealthCheck of the single-machine batch
# pool would not remediate, since one unhealthy machine of one is above its threshold.
worker=$(kubectl --kubeconfig "$state/edge-1.kubeconfig" get nodes --no-headers \
  -o custom-columns=N:.metadata.name | grep -- '-general-' | head -n 1)
nodes_before=$(kubectl --kubeconfig "$state/edge-1.kubeconfig" get nodes --no-headers | grep -c ' Ready ')
admin=$(cat "$state/sim/admin-addr")
say "Deleting worker $worker's VM in the simulated vCenter"
curl -fsS -X POST "http://$admin/v1/clusters/team-a/edge-1/nodes/$worker/delete-vm" >/dev/null
echo "VM of $worker deleted; waiting for the MachineHealthCheck to replace its machine" | indent
machines() {
  kubectl --kubeconfig "$state/edge-1.kubeconfig" get machines.cluster.x-k8s.io -n team-a --no-headers \
    -o custom-columns=N:.metadata.name,P:.status.phase,NODE:.status.nodeRef.name
}
healed=0
for _ in $(seq 1 900); do
  if ! machines | grep -q "$worker"; then
    nodes_ready=$(kubectl --kubeconfig "$state/edge-1.kubeconfig" get nodes --no-headers | grep -c ' Ready ' || true)
    if [[ "$nodes_ready" -ge "$nodes_before" ]]; then healed=1; break; fi
  fi
  sleep 0.2
done
[[ $healed == 1 ]] || { echo "edge-1 did not heal" >&2; machines >&2; exit 1; }
echo "MachineHealthCheck replaced the machine; with the manager still down:" | indent
kubectl --kubeconfig "$state/edge-1.kubeconfig" get nodes | indent

say "Restarting the manager (it reuses the running world); the agent reconnects and status catches up"
# The same address: the agents dial the endpoint they were installed with.
start_manager manager-2 "$addr"
for _ in $(seq 1 600); do
  out=$("$fm" cluster get edge-1 -o json 2>/dev/null || true)
  if python3 -c 'import json,sys; s=json.load(sys.stdin).get("status",{}); a=s.get("agent",{}); sys.exit(0 if s.get("phase")=="Ready" and a.get("connected") else 1)' <<<"$out" 2>/dev/null; then break; fi
  sleep 0.2
done
"$fm" cluster get edge-1 -o wide | indent

say "Scaling pool general from 3 to 4 workers (a spec change the agent applies)"
"$fm" cluster scale edge-1 --pool general --replicas 4 | indent
for _ in $(seq 1 900); do
  out=$("$fm" cluster get edge-1 -o json 2>/dev/null || true)
  if python3 -c 'import json,sys; s=json.load(sys.stdin).get("status",{}); p=s.get("pools",{}).get("general",{}); sys.exit(0 if s.get("phase")=="Ready" and p.get("ready")==4 and p.get("desired")==4 else 1)' <<<"$out" 2>/dev/null; then break; fi
  sleep 0.2
done
"$fm" cluster get edge-1 | indent

say "Deleting edge-1: its CAPI objects move back to the management cluster, then its machines go"
"$fm" cluster delete edge-1 --wait --timeout 10m 2>&1 | indent
kubectl --kubeconfig "$mgmt" get clusters.cluster.x-k8s.io,machines.cluster.x-k8s.io,workloadclusters -A 2>&1 | indent

if [[ "${KEEP:-0}" == 1 ]]; then
  say "Keep exploring: the manager and the world are still running"
  cat <<EOF | indent
export FLEDGE_SERVER=https://$addr FLEDGE_CA_FILE=$state/tls/ca.crt FLEDGE_TOKEN=\$(cat $state/token)
$fm cluster create -f examples/single-node.yaml --wait
management kubeconfig: $mgmt
token file: $state/token    manager pid: $manager_pid    world pid: $(cat "$state/sim.pid")
stop: kill $manager_pid \$(cat $state/sim.pid)
EOF
else
  say "Done. Stopping the manager and the world ('make demo KEEP=1' keeps them running)"
fi
