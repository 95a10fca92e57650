#!/usr/bin/env bash
# `make demo`: a local control plane (etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager), both operators built and started, the samples applied; a
# Deployment's pods go Pending, the pool grows to meet them and they run on the new
# nodes; a template change replaces every node, one at a time, replacement first, the
# pods moving with them; scaled down, the pool shrinks.
# Interactive: a live view until the end or Ctrl-C. With CI=true or no terminal it runs
# to completion and exits 0 only if the pool reached the expected sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${DEMO_DIR:-.kube/demo}
export KUBECONFIG=$PWD/$DIR.config
ASSETS=$(hack/control-plane.sh)
KUBECTL="$ASSETS/kubectl"
STRATEGY=${CONFLICT_STRATEGY:-apply}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
if [ -n "${DEMO_FREE_PORTS:-}" ]; then
  # `make test` runs the demo too; free ports let it run beside operators already up.
  NP_ADDR=127.0.0.1:$(free_port) AS_ADDR=127.0.0.1:$(free_port)
else
  NP_ADDR=127.0.0.1:8081 AS_ADDR=127.0.0.1:8082
fi
GROW_TO=4 SHRINK_TO=1
interactive=false
if [ -t 1 ] && [ -z "${CI:-}" ]; then interactive=true; fi

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo; echo "== cleaning up"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cargo run -q -p tools --bin local-cluster -- --dir "$DIR" --kubeconfig "$KUBECONFIG" down || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building both operators"
cargo build -q -p nodepool-operator -p autoscaler-operator -p tools --bins
echo "== starting a local control plane ($DIR)"
cargo run -q -p tools --bin local-cluster -- --dir "$DIR" --kubeconfig "$KUBECONFIG" down >/dev/null 2>&1 || true
cargo run -q -p tools --bin local-cluster -- --dir "$DIR" --kubeconfig "$KUBECONFIG" up

echo "== starting nodepool-operator and autoscaler-operator (--conflict-strategy $STRATEGY)"
# Each as its own user, with only the ClusterRole its Helm chart grants.
target/debug/nodepool-operator --context nodepool-operator --conflict-strategy "$STRATEGY" --metrics-addr "$NP_ADDR" >"$DIR/nodepool-operator.log" 2>&1 &
pids+=($!)
target/debug/autoscaler-operator --context autoscaler-operator --conflict-strategy "$STRATEGY" --metrics-addr "$AS_ADDR" >"$DIR/autoscaler-operator.log" 2>&1 &
pids+=($!)
for i in 0 1; do
  addr=$([ "$i" = 0 ] && echo "$NP_ADDR" || echo "$AS_ADDR")
  for _ in $(seq 100); do
    kill -0 "${pids[$i]}" 2>/dev/null || { echo "an operator exited at start (is $addr taken?):"; tail -5 "$DIR"/*-operator.log; exit 1; }
    curl -sf "http://$addr/readyz" >/dev/null && break
    sleep 0.2
  done
  curl -sf "http://$addr/readyz" >/dev/null || { echo "operator on $addr not ready"; exit 1; }
done

echo "== applying the NodePool and the Autoscaler (deploy/samples)"
"$KUBECTL" apply -f deploy/samples/nodepool.yaml -f deploy/samples/autoscaler.yaml

ready_nodes() {
  "$KUBECTL" get nodes -l nodepool.dev/pool=general --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l
}
frame() {
  if $interactive; then clear; fi
  echo "== $1   ($(date +%T))"
  "$KUBECTL" get nodepools,autoscalers 2>/dev/null
  echo
  "$KUBECTL" get nodes -l nodepool.dev/pool=general 2>/dev/null || true
  echo
  "$KUBECTL" get pods -l app=demand -o wide 2>/dev/null || true
  echo
  echo "-- key log lines"
  grep -hE "scaled (up|down)|disrupting" "$DIR"/*-operator.log 2>/dev/null | sed -E 's/\x1b\[[0-9;]*m//g' | tail -4 | cut -c1-200
}
# Waits until the pool has $1 Ready nodes and asks for exactly that many.
wait_for() {
  local want=$1 what=$2 deadline=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$deadline" ]; do
    local desired
    desired=$("$KUBECTL" get np general -o jsonpath='{.spec.replicas}')
    if [ "$(ready_nodes)" -eq "$want" ] && [ "$desired" -eq "$want" ]; then
      frame "$what: reached $want nodes"; return 0
    fi
    if $interactive; then frame "$what (waiting for $want nodes)"; else
      echo "   $(date +%T) desired=$desired ready=$(ready_nodes) (want $want)"; fi
    sleep 2
  done
  frame "$what: did NOT reach $want nodes"; return 1
}

wait_for 1 "pool at its minimum" 60
echo; echo "== a Deployment of 5 pods of 1 cpu wants the pool: 5 cores / (2 cores x 80%) -> $GROW_TO nodes"
"$KUBECTL" apply -f deploy/samples/demand/deployment.yaml
"$KUBECTL" get pods -l app=demand -o wide
grew=0; wait_for "$GROW_TO" "demand arrived" 90 && grew=1
# Scheduled by kube-scheduler onto the new nodes, reported Running by nodepool-operator.
running_pods() {
  "$KUBECTL" get pods -l app=demand --no-headers 2>/dev/null | awk '$3 == "Running"' | wc -l
}
ran=0
for _ in $(seq 60); do
  if [ "$(running_pods)" -eq 5 ]; then ran=1; break; fi
  sleep 1
done
frame "the Deployment's pods: $(running_pods) of 5 Running"
echo; echo "== the pool's template changes (a label): every node is Drifted and replaced, one at a time, its replacement Ready first"
"$KUBECTL" patch np general --type merge -p '{"spec":{"template":{"labels":{"rollout":"v2"}}}}'
rolled=0
for _ in $(seq 90); do
  updated=$("$KUBECTL" get np general -o jsonpath='{.status.updatedReplicas}')
  nodes=$("$KUBECTL" get nodes -l nodepool.dev/pool=general --no-headers 2>/dev/null | wc -l)
  if [ "${updated:-0}" -eq "$GROW_TO" ] && [ "$nodes" -eq "$GROW_TO" ] && [ "$(ready_nodes)" -eq "$GROW_TO" ] && [ "$(running_pods)" -eq 5 ]; then
    rolled=1; break
  fi
  if $interactive; then frame "rolling out (UP-TO-DATE $updated of $GROW_TO)"; else
    echo "   $(date +%T) up-to-date=${updated:-0} nodes=$nodes ready=$(ready_nodes) running=$(running_pods)"; fi
  sleep 2
done
frame "rollout: $("$KUBECTL" get np general -o jsonpath='{.status.updatedReplicas}') of $GROW_TO nodes on the new template"
"$KUBECTL" get np general -o jsonpath='{range .status.conditions[?(@.type=="Disrupting")]}Disrupting={.status} {.reason}: {.message}{"\n"}{end}'
echo; echo "== the Deployment scaled to 1; after the 30 s scale-down window the pool shrinks one node per 10 s (its policy)"
"$KUBECTL" scale deployment demand --replicas=1
shrank=0; wait_for "$SHRINK_TO" "demand gone" 180 && shrank=1
"$KUBECTL" delete -f deploy/samples/demand/deployment.yaml --wait=false
echo
echo "== conflicts and writes (from /metrics)"
for addr in "$NP_ADDR" "$AS_ADDR"; do
  curl -s "http://$addr/metrics" | grep -E "^[a-z_]+_(conflicts|writes|writes_skipped)_total" || true
done
if [ "$grew" = 1 ] && [ "$ran" = 1 ] && [ "$rolled" = 1 ] && [ "$shrank" = 1 ]; then
  echo "demo passed: the pool grew to $GROW_TO, the 5 pods ran on it, a template change replaced its nodes, and it shrank to $SHRINK_TO"
else
  echo "demo FAILED: grew=$grew ran=$ran rolled=$rolled shrank=$shrank (logs in $DIR)"
  exit 1
fi
