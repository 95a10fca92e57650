# Everything a developer or CI runs. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

# The local control plane (`make cluster-up`) writes its kubeconfig here.
LOCAL_KUBECONFIG := $(CURDIR)/.kube/config
ASSETS = $(shell hack/control-plane.sh)
DOCKER ?= docker
KIND ?= kind
KIND_CLUSTER ?= nodepool
KIND_KUBECONFIG := $(CURDIR)/.kube/kind.config
IMAGE_PREFIX ?= nodepool-dev
IMAGE_TAG ?= dev
KUBECTL = $(ASSETS)/kubectl --kubeconfig $(LOCAL_KUBECONFIG)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: assets
assets: ## Build or fetch etcd, kube-apiserver, kubectl and helm into ~/.cache (once)
	@hack/control-plane.sh >/dev/null

.PHONY: build
build: ## Build every crate
	$(CARGO) build --workspace --all-targets

.PHONY: fmt-check
fmt-check:
	$(CARGO) fmt --all -- --check

.PHONY: clippy
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: charts-check
charts-check: assets ## helm lint and helm template both charts
	$(ASSETS)/helm lint --strict charts/nodepool-operator charts/autoscaler-operator
	for c in nodepool-operator autoscaler-operator; do $(ASSETS)/helm template ci charts/$$c >/dev/null; done

.PHONY: test
test: assets fmt-check clippy charts-check ## fmt, clippy, unit and integration tests, then the demo, on local control planes
	@mkdir -p target
	$(CARGO) test --workspace --lib --bins --tests --no-fail-fast 2>&1 | tee target/test.log
	CI=true DEMO_DIR=.kube/demo-test DEMO_FREE_PORTS=1 hack/demo.sh </dev/null
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "\n%d passed, %d failed\n", p + 1, f }' target/test.log

.PHONY: crds
crds: ## Regenerate deploy/crds and the charts' crds/ from the Rust types
	$(CARGO) run -q -p shared-crd --bin crdgen -- deploy/crds charts/nodepool-operator/crds charts/autoscaler-operator/crds

.PHONY: chart-docs
chart-docs: ## Regenerate each chart's README.md (values table) from values.yaml and values.schema.json
	$(CARGO) run -q -p tools --bin chart-docs

.PHONY: cluster-up
cluster-up: assets ## Start a persistent local control plane; kubeconfig in .kube/config
	$(CARGO) run -q -p tools --bin local-cluster -- --kubeconfig $(LOCAL_KUBECONFIG) up

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its data
	$(CARGO) run -q -p tools --bin local-cluster -- --kubeconfig $(LOCAL_KUBECONFIG) down

.PHONY: demo
demo: assets ## The main job: both operators scale a pool up and down on a local control plane
	hack/demo.sh

.PHONY: samples
samples: cluster-up ## Apply the sample NodePool and Autoscaler to the `make cluster-up` cluster
	$(KUBECTL) apply -f deploy/samples/nodepool.yaml -f deploy/samples/autoscaler.yaml
	$(KUBECTL) get nodepools,autoscalers

.PHONY: timeline
timeline: assets ## The two-operator timeline with lazy, retry and apply, measured (results/; TIMELINE_ARGS=--rollout adds a rollout)
	$(CARGO) build -q -p nodepool-operator -p autoscaler-operator -p tools --bins
	$(CARGO) run -q -p tools --bin timeline -- --bin-dir target/debug --results results $(TIMELINE_ARGS)

.PHONY: bench
bench: assets ## The timeline 3 times per strategy: medians of conflicts, requests, convergence
	$(CARGO) build -q -p nodepool-operator -p autoscaler-operator -p tools --bins
	$(CARGO) run -q -p tools --bin timeline -- --bin-dir target/debug --results results --repeat 3 --lines 0

.PHONY: bench-scale
bench-scale: assets ## 1,000 pools, both operators, every strategy: requests vs minimum, idle writes, CPU, RSS (results/)
	$(CARGO) build -q --release -p nodepool-operator -p autoscaler-operator -p tools --bins
	target/release/scale-bench --bin-dir target/release --results results $(BENCH_SCALE_ARGS)

.PHONY: bench-envelope
bench-envelope: assets ## N pods onto one pool: onto nodes that exist (the limit run) vs autoscaled from 1 node (results/; BENCH_ENVELOPE_ARGS)
	$(CARGO) build -q --release -p nodepool-operator -p autoscaler-operator -p tools --bins
	target/release/envelope-bench --bin-dir target/release --results results $(BENCH_ENVELOPE_ARGS)

.PHONY: bench-decision
bench-decision: ## One autoscaler decision (demand and packing) from 1,000 to 100,000 pods, and the heap per cached pod, no API server
	$(CARGO) bench -q -p autoscaler-core --bench decision
	$(CARGO) run -q --release -p tools --bin cache-bytes

.PHONY: images
images: ## Build one image per operator: FROM scratch, static binary (needs a Docker engine; IMAGE_BINARY=compile|prebuilt|auto)
	IMAGE_PREFIX=$(IMAGE_PREFIX) IMAGE_TAG=$(IMAGE_TAG) hack/images.sh

.PHONY: test-images
test-images: assets ## Start a Docker engine if none runs, build both images, run them against the local control plane
	$(CARGO) test -p e2e --test images -- --nocapture

.PHONY: kind-up
kind-up: ## Create the kind cluster $(KIND_CLUSTER) (needs kind and a Docker engine)
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER)
	$(KIND) get kubeconfig --name $(KIND_CLUSTER) > $(KIND_KUBECONFIG)

.PHONY: e2e
e2e: kind-up ## The integration suite against the kind cluster (E2E_KUBECONFIG), as it runs here locally
	E2E_KUBECONFIG=$(KIND_KUBECONFIG) $(CARGO) test --workspace --lib --bins --tests --no-fail-fast

.PHONY: kind-deploy
kind-deploy: kind-up images ## Load the images into kind and install both charts
	for op in nodepool-operator autoscaler-operator; do \
	  $(KIND) load docker-image --name $(KIND_CLUSTER) $(IMAGE_PREFIX)/$$op:$(IMAGE_TAG); \
	  $(ASSETS)/helm upgrade --install --kubeconfig $(KIND_KUBECONFIG) $$op charts/$$op \
	    --namespace nodepool-system --create-namespace \
	    --set image.repository=$(IMAGE_PREFIX)/$$op --set image.tag=$(IMAGE_TAG) --set image.pullPolicy=Never; \
	done
