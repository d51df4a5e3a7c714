# The registry's build. `make help` lists the targets. CI runs the same
# targets a person runs (.ci/run).

SHELL       := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
GO          ?= go
BIN         := bin
# Pinned tools, run through the Go toolchain (downloaded from the module
# proxy on first use, then cached): nothing to install globally.
BUF         := $(GO) run github.com/bufbuild/buf/cmd/buf@v1.70.0
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_FLAGS  ?=
TEST_TIMEOUT ?= 15m
# make soak: how long the fault suite's long form runs, and where its table
# and log go (docs/reliability.md records one).
DURATION     ?= 30m
SOAK_TIMEOUT ?= 3h
SOAK_REPORT  ?= soak-report.md
SOAK_LOG     ?= soak.log
SOAK_LOGS    ?= soak-logs

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/registry-node and bin/registryctl
	$(GO) build -o $(BIN)/registry-node ./cmd/registry-node
	$(GO) build -o $(BIN)/registryctl ./cmd/registryctl

.PHONY: run
run: build ## start a three-node cluster on 127.0.0.1 (data in ./data); Ctrl-C stops it
	@BIN=$(BIN)/registry-node DATA=data scripts/run-cluster.sh

.PHONY: test
test: ## run every test with the race detector
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

.PHONY: test-short
test-short: ## run the fast tests only (-short)
	$(GO) test -race -count=1 -short ./...

.PHONY: soak
soak: ## the fault suite's long form for DURATION (default 30m), one scenario at a time; the table goes to SOAK_REPORT, histories and node logs to SOAK_LOGS
	@echo "soak: $(DURATION); the table will be in $(SOAK_REPORT), the full log in $(SOAK_LOG)"
	REGCENTER_SOAK=$(DURATION) REGCENTER_REPORT=$(abspath $(SOAK_REPORT)) REGCENTER_TEST_LOG_DIR=$(abspath $(SOAK_LOGS)) \
		$(GO) test -count=1 -parallel 1 -timeout $(SOAK_TIMEOUT) -v ./integration/ 2>&1 | tee $(SOAK_LOG) | \
		grep -E -- '^(--- |ok |FAIL|panic:)|REPORT'
	@echo; cat $(SOAK_REPORT)

.PHONY: bench
bench: ## run the cluster benchmarks (W1-W4, docs/benchmarks.md) on three local nodes; BENCH_FLAGS= adds flags
	$(GO) run ./cmd/registry-bench $(BENCH_FLAGS)

.PHONY: bench-scale
bench-scale: ## the million-instance run (registry-bench -workloads scale, docs/benchmarks.md), bounded to 15 minutes; BENCH_SCALE_FLAGS= adds flags (e.g. -scale-instances 200000)
	timeout --signal=INT --kill-after=30s 15m $(GO) run ./cmd/registry-bench -workloads scale $(BENCH_SCALE_FLAGS)

.PHONY: bench-go
bench-go: ## run the Go benchmarks of the hot paths (fsm apply, encode/decode, snapshot, expiry selection, beat batching, validation)
	$(GO) test -run '^$$' -bench . -benchmem $${BENCH_PKGS:-./fsm/ ./beatcheck/ ./rpc/ ./validate/}

.PHONY: fuzz
fuzz: ## fuzz Apply, the ACL rules parser and Bearer parsing for FUZZTIME each (default 20s)
	$(GO) test ./fsm -run '^$$' -fuzz '^FuzzApply$$' -fuzztime $${FUZZTIME:-20s}
	$(GO) test ./acl -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $${FUZZTIME:-20s}
	$(GO) test ./acl -run '^$$' -fuzz '^FuzzBearer$$' -fuzztime $${FUZZTIME:-20s}
	$(GO) test ./dnsserver -run '^$$' -fuzz '^FuzzReply$$' -fuzztime $${FUZZTIME:-20s}
	$(GO) test ./udpbeat -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $${FUZZTIME:-20s}

.PHONY: proto
proto: ## regenerate the protobuf code with buf
	$(BUF) lint
	$(BUF) generate

.PHONY: verify
verify: ## gofmt, vet, staticcheck, buf lint, protos in sync, go mod tidy, fsm determinism, client and acl import checks
	@echo "gofmt"; out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	@echo "go vet"; $(GO) vet ./...
	@echo "staticcheck"; $(STATICCHECK) ./...
	@echo "go mod tidy"; $(GO) mod tidy -diff
	@echo "buf lint"; $(BUF) lint
	@echo "protos in sync"; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
		$(BUF) generate -o $$tmp; \
		for f in $$(cd $$tmp && find . -name '*.go'); do \
			cmp -s "$$tmp/$$f" "$$f" || { echo "$$f is out of date: run make proto"; exit 1; }; \
		done
	@echo "no clock or randomness in fsm/"; \
		if grep -nE 'time\.Now\(|math/rand|crypto/rand|rand\.' $$(ls fsm/*.go | grep -v _test.go); then \
			echo "fsm/ must be deterministic: the proposer stamps the time into the command"; exit 1; fi
	@echo "client/ imports no server package"; \
		if [ -d client ]; then bad=$$($(GO) list -deps ./client/... | grep -E 'hashicorp/raft|/registry/(fsm|beatcheck|node|rpc|groupcommit)(/|$$)' || true); \
		if [ -n "$$bad" ]; then echo "client/ depends on: $$bad"; exit 1; fi; fi
	@echo "acl/ imports no server package and no grpc"; \
		bad=$$($(GO) list -deps ./acl | grep -E 'hashicorp/raft|google.golang.org/grpc|/registry/(fsm|beatcheck|node|rpc|groupcommit)(/|$$)' || true); \
		if [ -n "$$bad" ]; then echo "acl/ depends on: $$bad"; exit 1; fi
	@echo "verify: ok"

.PHONY: deploy-check
deploy-check: ## check deploy/: promtool check and test the alert rules and the example config
	@command -v promtool >/dev/null || { echo "promtool is not installed (Debian: apt-get install prometheus)"; exit 1; }
	cd deploy/prometheus && promtool check rules registry-alerts.yml && promtool test rules registry-alerts_test.yml && promtool check config prometheus.yml

# Docker: a FROM-scratch image holding a static binary built here (nothing
# is pulled), and the three-node cluster of deploy/docker-compose.yml.
IMAGE           ?= regcenter/registry:dev
COMPOSE         ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_PROJECT ?= registry
DEPLOY_COMPOSE  := deploy/docker-compose.yml

.PHONY: image
image: ## build the FROM-scratch image regcenter/registry:dev (IMAGE=...) from a static binary
	rm -rf $(BIN)/image && mkdir -p $(BIN)/image/data
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/image/registry-node ./cmd/registry-node
	docker build --network none -f deploy/Dockerfile -t $(IMAGE) \
		--build-arg VERSION="$$(git describe --tags --always --dirty 2>/dev/null || echo dev)" \
		--build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
		--build-arg CREATED="$$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		$(BIN)/image
	@docker image ls $(IMAGE) --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}'

# The compose cluster's CA, certificates and ACL management token
# (deploy/compose-secrets.sh); the directory is git-ignored.
SECRETS         := deploy/secrets

.PHONY: compose-secrets
compose-secrets: build ## create, where absent, the compose cluster's CA, node and client certificates and ACL management token in deploy/secrets
	@deploy/compose-secrets.sh $(BIN)/registryctl $(SECRETS)

.PHONY: compose-up
compose-up: image compose-secrets ## start the three-node cluster in Docker (mTLS, ACLs; REPLICAS=1 adds two read replicas), wait for a leader, print the endpoints and how to call them
	REGISTRY_IMAGE=$(IMAGE) $(COMPOSE) -p $(COMPOSE_PROJECT) -f $(DEPLOY_COMPOSE) $(if $(REPLICAS),--profile replicas) up -d
	@SERVICES="node1 node2 node3$(if $(REPLICAS), replica1 replica2)" deploy/compose-wait.sh $(COMPOSE_PROJECT)
	@s=$(abspath $(SECRETS)); ip=$${REGISTRY_BIND_IP:-127.0.0.1}; \
	eps=$$ip:$${REGISTRY_GRPC_PORT_1:-7001},$$ip:$${REGISTRY_GRPC_PORT_2:-7002},$$ip:$${REGISTRY_GRPC_PORT_3:-7003}; \
	deploy/compose-tokens.sh $(BIN)/registryctl $$s $$eps || exit 1; \
	echo "The nodes require TLS with a client certificate (mTLS) and an ACL token on every call."; \
	echo "The files are in $(SECRETS)/; management-token holds the secret of the management token (it may do everything):"; \
	echo "  export REGISTRY_TOKEN=\$$(cat $$s/management-token)"; \
	echo "  $(BIN)/registryctl --endpoints $$eps --cacert $$s/registry-agent-ca.pem --cert $$s/client.pem --key $$s/client-key.pem cluster status"; \
	echo "or, for every registryctl in this shell:"; \
	echo "  export REGISTRY_ENDPOINTS=$$eps REGISTRY_CACERT=$$s/registry-agent-ca.pem REGISTRY_CERT=$$s/client.pem REGISTRY_KEY=$$s/client-key.pem"; \
	echo "  curl --cacert $$s/registry-agent-ca.pem --cert $$s/client.pem --key $$s/client-key.pem -H \"Authorization: Bearer \$$REGISTRY_TOKEN\" https://$$ip:$${REGISTRY_HTTP_PORT_1:-7201}/v1/cluster/status"; \
	echo "Give applications tokens of their own: registryctl acl policy create / acl token create (README, Security)."
	@echo "Stop with: make compose-down (the data volumes stay; VOLUMES=1 removes them too)"

.PHONY: compose-down
compose-down: ## stop and remove the Docker cluster (keeps its data volumes; VOLUMES=1 removes them)
	$(COMPOSE) -p $(COMPOSE_PROJECT) -f $(DEPLOY_COMPOSE) -f deploy/docker-compose.five.yml --profile monitoring --profile replicas down --remove-orphans $(if $(VOLUMES),-v)

.PHONY: compose-test
compose-test: image compose-secrets ## test the image and the compose cluster (mTLS, ACLs, two read replicas) with real containers: TLS and token refusals, kill, partition, restart, pause; replica reads, kill, partition past compaction
	@project=regtest-$$$$-$$RANDOM; \
	trap '$(COMPOSE) -p '"$$project"' -f $(DEPLOY_COMPOSE) --profile replicas down -v --remove-orphans >/dev/null 2>&1 || true' EXIT; \
	REGISTRY_COMPOSE_TEST=1 REGISTRY_IMAGE=$(IMAGE) REGISTRY_COMPOSE_CMD="$(COMPOSE)" REGISTRY_COMPOSE_PROJECT=$$project \
		$(GO) test -race -count=1 -v -timeout 15m $(TEST_FLAGS) ./deploy/composetest/

.PHONY: clean
clean: ## remove build output and ./data
	rm -rf $(BIN) data
