# dcos-rs: the two commands a new machine needs are `make run` and `make test`.
CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
DATA_DIR ?= ./.dcos-rs
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# C compiler for ring's few C/asm files in the musl build: musl-gcc (apt-get install
# musl-tools) if present, else the system gcc (those files use no libc headers).
MUSL_CC ?= $(or $(shell command -v musl-gcc 2>/dev/null),gcc)

FUZZ_SECS ?= 60
FUZZ_TARGETS := app_definition layer_unpack wal_records

.PHONY: run build test test-core static fmt lint clean-state fuzz bench bench-runtime bench-raft bench-raft-single bench-failover bench-detection bench-placement bench-scheduling bench-jobs bench-offers bench-install bench-dashboard screenshots

## run: build (release) and start the embedded single-node cluster on http://127.0.0.1:5050
run:
	$(CARGO) build --release --bin dcos-rs
	$(TARGET_DIR)/release/dcos-rs up --data-dir $(DATA_DIR)

build:
	$(CARGO) build --release --bin dcos-rs

## test: every test (unit, in-process clusters, containers: needs root, busybox-static, chromium)
test:
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=2

## screenshots: the dashboard's browser test (chromium, Playwright), then the README's three screenshots from it into docs/screenshots/
screenshots:
	DCOS_RS_SCREENSHOTS=$(abspath $(TARGET_DIR))/screenshots $(CARGO) test --test it -- dashboard:: --test-threads=1
	mkdir -p docs/screenshots
	cp $(TARGET_DIR)/screenshots/overview.png $(TARGET_DIR)/screenshots/service.png $(TARGET_DIR)/screenshots/job.png docs/screenshots/

## test-core: the pure core alone, in seconds
test-core:
	$(CARGO) test -p dcos-core

## bench: every benchmark (numbers only, never pass/fail; format in ARCHITECTURE.md, Benchmarks)
bench: bench-runtime bench-raft bench-raft-single bench-failover bench-detection bench-placement bench-scheduling bench-jobs bench-offers bench-install bench-dashboard

## bench-runtime: start /bin/true through the static binary's shim, runc and crun (root; apt-get install -y runc crun busybox-static)
bench-runtime: static
	DCOS_RS_BIN=$(abspath $(TARGET_DIR)/$(MUSL_TARGET)/release/dcos-rs) $(CARGO) bench --bench runtime

## bench-raft: replicated writes, 1/100/1000 clients, 3 masters vs 3 etcd 3.4 members (root; installs etcd-server if missing)
bench-raft:
	@command -v etcd >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends etcd-server; } \
		|| { echo "error: bench-raft needs etcd 3.4: apt-get install -y etcd-server" >&2; exit 1; }
	$(CARGO) bench --bench raft

## bench-raft-single: durable writes through one master on this disk (latency, group commit, open/reopen)
bench-raft-single:
	$(CARGO) bench -p dcos-raft --bench single_node

## bench-placement: the pure services planner and placement, 10,000 instances on 1,000 agents
bench-placement:
	$(CARGO) bench -p dcos-core --bench placement

## bench-scheduling: the services framework: 50,000 instances on 1,000 emulated agents (fake
## runtime), then 100 real instances on one agent (root; the release binary runs the tasks)
bench-scheduling: build
	DCOS_RS_BIN=$(abspath $(TARGET_DIR)/release/dcos-rs) $(CARGO) bench --bench scheduling

## bench-dashboard: the dashboard's pages in headless chromium with 1,000 tasks (fake runtime)
bench-dashboard:
	$(CARGO) bench --bench dashboard

## bench-offers: external frameworks (Mesos's v1 scheduler API) on 1,000 emulated agents, 10
## frameworks: launches through offers per second, and task end -> offer received (p99)
bench-offers:
	$(CARGO) bench --bench offers

## bench-jobs: 10,000 cron jobs (`* * * * *`): the jobs planner's cost per due job, then
## scheduled instant -> task launch on 100 emulated agents (fake runtime), over two minutes
bench-jobs:
	$(CARGO) bench --bench jobs

## bench-install: `dcos-rs install` of 3 masters + 2 agents (nspawn hosts with sshd and systemd)
## from the static build, then a rolling `cluster upgrade` of them (root; systemd-container, mmdebstrap)
bench-install: static
	DCOS_RS_BIN=$(abspath $(TARGET_DIR)/$(MUSL_TARGET)/release/dcos-rs) $(CARGO) bench --bench install

## bench-failover: kill -9 of the leading master -> first acknowledged write, 20 trials (root)
bench-failover:
	$(CARGO) bench --bench failover

## bench-detection: kill -9 of an agent -> marked unreachable; false positives at 10 % loss for DCOS_BENCH_LOSS_SECS (default 600) (root)
bench-detection:
	$(CARGO) bench --bench detection

## fuzz: each fuzz target (fuzz/) for FUZZ_SECS seconds (default 60) under libFuzzer with
## AddressSanitizer (nightly toolchain and cargo-fuzz; installed if missing). A crash stops
## it and leaves its input in fuzz/artifacts/<target>/: make it a regression test.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	for target in $(FUZZ_TARGETS); do \
		$(CARGO) +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECS) -rss_limit_mb=4096 || exit 1; \
	done

## static: a fully static binary (musl, ring as the TLS provider)
static:
	rustup target add $(MUSL_TARGET)
	CC_x86_64_unknown_linux_musl=$(MUSL_CC) $(CARGO) build --release --target $(MUSL_TARGET) --bin dcos-rs
	@file $(TARGET_DIR)/$(MUSL_TARGET)/release/dcos-rs
	@ls -l $(TARGET_DIR)/$(MUSL_TARGET)/release/dcos-rs

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## clean-state: forget the embedded cluster's state (apps, tasks, images)
clean-state:
	rm -rf $(DATA_DIR)
