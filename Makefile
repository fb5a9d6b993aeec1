# ippool — see README.md. Everything runs through the Bun and Deno pinned in package.json.
BUN  := node_modules/.bin/bun
# Per-test time limit for the suites (bunfig.toml's [test] timeout is not read by this Bun).
BUN_TEST := $(BUN) test --timeout 60000
DENO := node_modules/.bin/deno
TSC  := node_modules/.bin/tsc
BIOME := node_modules/.bin/biome
SOURCES := $(shell find src -name '*.ts') build.ts package.json
# Debian packages the suites use: curl (README examples); for the host suites (test/hosts: network
# namespaces with real sshd, nftables, libvirt's test driver) OpenSSH, nftables, iproute2, virsh,
# conntrack, arping and procps (sysctl, pgrep); for the real-libvirt suite (test/hosts/real-libvirt.test.ts:
# a real libvirtd, QEMU guests booted from Debian's kernel and a busybox initramfs, dnsmasq and
# dhcp_release) libvirt's daemon, QEMU, dnsmasq, busybox-static, cpio and xz; PostgreSQL 15 for the fleet
# database's tests (test/support/postgres.ts starts a throwaway cluster); and wrk for the benchmarks.
LIBVIRT_PACKAGES := libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils dnsmasq-base dnsmasq-utils \
	busybox-static cpio xz-utils
TEST_PACKAGES := curl systemd openssh-server openssh-client nftables iproute2 libvirt-clients conntrack iputils-arping procps prometheus postgresql \
	$(LIBVIRT_PACKAGES)
BENCH_PACKAGES := wrk curl postgresql

PREFIX ?= /usr/local
UNITDIR ?= /lib/systemd/system

.PHONY: all run build install check test test-local test-unit test-integration test-hosts test-libvirt test-deno test-crash test-crash-hosts \
	test-crash-fleet test-crash-fleet-hosts soak-patroni test-ssh-faults test-limits test-auth fuzz fuzz-config soak bench bench-flap bench-fleet bench-plan bench-keys bench-list clean image-test

all: build

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

dist/ippool: node_modules/.installed $(SOURCES)
	$(BUN) build.ts

build: dist/ippool

## Start the daemon on the embedded default (TCP 127.0.0.1:8080, data in ./data).
run: build
	./dist/ippool

## Install binary, systemd unit, libvirt hook and (if none exists yet) an example config; DESTDIR is honoured.
install: build
	install -D -m 0755 dist/ippool $(DESTDIR)$(PREFIX)/bin/ippool
	@# The unit and the hook run the binary where PREFIX put it.
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/ippool|$(PREFIX)/bin/ippool|g' systemd/ippool.service > $(DESTDIR)$(UNITDIR)/ippool.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ippool.service
	install -d -m 0755 $(DESTDIR)/etc/ippool
	[ -e $(DESTDIR)/etc/ippool/ippool.toml ] || install -m 0644 docs/ippool.example.toml $(DESTDIR)/etc/ippool/ippool.toml
	@# libvirt runs /etc/libvirt/hooks/qemu, and (libvirt >= 6.5) every file in qemu.d/: never replace another hook.
	@# An earlier ippool hook (it logs as ippool-hook) is replaced; any other hook is kept.
	hook=$(DESTDIR)/etc/libvirt/hooks/qemu; \
	if [ -e "$$hook" ] && ! grep -q 'logger -t ippool-hook' "$$hook"; then \
	  hook=$(DESTDIR)/etc/libvirt/hooks/qemu.d/ippool; \
	  echo "an existing /etc/libvirt/hooks/qemu was kept; the ippool hook went to qemu.d/ippool"; \
	fi; \
	install -d -m 0755 "$$(dirname "$$hook")" && \
	sed 's|/usr/local/bin/ippool|$(PREFIX)/bin/ippool|g' hooks/qemu > "$$hook" && chmod 0755 "$$hook"
	@echo "libvirtd reads its hooks only when it starts: restart it (systemctl restart libvirtd) for the hook to run"

check: node_modules/.installed
	$(TSC) --noEmit -p .
	$(BIOME) check .

## Everything: Debian packages (as root), typecheck + lint, unit and integration tests, the Deno smoke run.
test: node_modules/.installed
	bash hooks/install-packages $(TEST_PACKAGES)
	$(MAKE) check
	$(MAKE) build
	bash test/run.sh

## Every suite that needs no root (no namespaces; the integration suites need Debian's postgresql and prometheus
## installed): check, unit, integration, the crash loop without hosts, fuzz.
test-local: node_modules/.installed
	$(MAKE) check
	$(MAKE) build
	$(BUN_TEST) test/unit test/integration
	CRASH_SEED=20261122 $(BUN_TEST) test/crash/crash-loop.test.ts -t "under mixed traffic"
	FUZZ_SEED=20261122 $(BUN_TEST) test/fuzz

test-unit: node_modules/.installed
	$(BUN_TEST) test/unit

test-integration: build
	$(BUN_TEST) test/integration

## The host driver against fake hypervisor hosts in network namespaces (as root).
test-hosts: build
	bash hooks/install-packages $(TEST_PACKAGES)
	$(BUN_TEST) test/unit/hosts test/hosts

## ippool on a real libvirt host: real libvirtd and QEMU guests doing DHCP, the hook from make install,
## dnsmasq reservations, EIPs over a real sshd (as root; about 90 s; LIBVIRT_STARTS=10 times 10 starts).
test-libvirt: build
	bash hooks/install-packages $(TEST_PACKAGES)
	$(BUN_TEST) test/hosts/real-libvirt.test.ts

## kill -9 crash-consistency loop on one data directory (CRASH_TRIALS, default 200; CRASH_SEED to replay).
CRASH_TRIALS ?= 200
test-crash: build
	$(BUN) test/crash/crash-loop.ts --trials $(CRASH_TRIALS) $(if $(CRASH_SEED),--seed $(CRASH_SEED))

## The same loop with the daemon on the shared store, a PostgreSQL cluster it starts (CRASH_TRIALS, CRASH_SEED).
test-crash-fleet: build
	bash hooks/install-packages postgresql
	$(BUN) test/crash/crash-loop.ts --postgres --trials $(CRASH_TRIALS) $(if $(CRASH_SEED),--seed $(CRASH_SEED))

## The crash loop with EIPs associated on a namespace testbed (as root; CRASH_TRIALS, CRASH_SEED).
test-crash-hosts: build
	bash hooks/install-packages $(TEST_PACKAGES)
	$(BUN) test/crash/crash-loop.ts --hosts --trials $(CRASH_TRIALS) $(if $(CRASH_SEED),--seed $(CRASH_SEED))

## The crash loop with hosts on the shared store: the daemon in the testbed reaches its PostgreSQL cluster over the Unix socket (as root).
test-crash-fleet-hosts: build
	bash hooks/install-packages $(TEST_PACKAGES)
	$(BUN) test/crash/crash-loop.ts --hosts --postgres --trials $(CRASH_TRIALS) $(if $(CRASH_SEED),--seed $(CRASH_SEED))

## Fleet mode through PATRONI_FAILOVERS (5) crashes of the leader of a Patroni-managed cluster (etcd, two nodes, synchronous mode), three daemons under load (as root; about 1 minute per failover).
soak-patroni: build
	bash hooks/install-packages postgresql patroni etcd-server
	$(BUN) test/fleet/patroni-soak.ts --failovers $(or $(PATRONI_FAILOVERS),5)

## The auth matrix alone (every /openapi.json route × 22 key presentations); `make bench-keys` times the key check.
test-auth: build
	$(BUN_TEST) test/integration/auth-matrix.test.ts

## SSH faults (hang, garbage, drop, changed host key, host down) with their figures; SSH_FAULTS_HOLD_S / SSH_FAULTS_DOWN_S lengthen them (as root).
test-ssh-faults: build
	bash hooks/install-packages $(TEST_PACKAGES)
	SSH_FAULTS_REPORT=1 $(BUN_TEST) test/hosts/ssh-faults.test.ts

## Resource limits, long run: 15,000 idle TCP connections + 2,000 slow-loris clients for LIMITS_SECONDS (120) (as root: own network namespace).
test-limits: build
	$(BUN) test/limits/limits-soak.ts --seconds $(or $(LIMITS_SECONDS),120)

## The HTTP fuzzer's long run: 100,000 requests, random seed (FUZZ_SEED=N reproduces a run).
fuzz: build
	$(BUN) test/fuzz/http-fuzz.ts --requests 100000

## The config fuzzer's long run: 100,000 files in-process and 300 through the binary (CONFIG_FUZZ_SEED=N picks the cases).
fuzz-config: build
	CONFIG_FUZZ_CASES=100000 CONFIG_FUZZ_BINARY_CASES=300 $(BUN_TEST) test/fuzz/config-fuzz.test.ts

## The integration smoke subset against `deno run src/main.ts` instead of the binary.
test-deno: node_modules/.installed
	IPPOOL_DAEMON=deno $(BUN_TEST) test/integration/smoke.test.ts

## ippool against the floor of its stack (bench/floor.ts), Kea's lease rate, client start-up against curl, the
## throughput, latency, start-up, failover and key-timing runs, and fleet mode on PostgreSQL against LMDB (about 20
## minutes; as root for Kea and the testbed).
bench: build
	bash hooks/install-packages $(BENCH_PACKAGES)
	bash bench/run.sh

## Pool API throughput and p99 with one host flapping vs steady, in the testbed (as root; about 3 minutes).
bench-flap: build
	bash hooks/install-packages $(TEST_PACKAGES) $(BENCH_PACKAGES)
	$(BUN) bench/flap.ts --raw bench/results/raw/flap.json

## Fleet mode: allocate on LMDB vs PostgreSQL with one and three daemons, with and without a synchronous standby, and Kea's PostgreSQL lease backend
## (about six minutes; as root for Kea).
bench-fleet: build
	bash hooks/install-packages $(BENCH_PACKAGES) kea-dhcp4-server kea-admin
	$(BUN) bench/fleet.ts
	$(BUN) bench/kea.ts --pgsql

## A fleet daemon's planning of a batch of new allocations, in process (µs per step); PLAN_AGAINST=<checkout> plans another tree alternately.
bench-plan:
	$(BUN) bench/plan.ts $(if $(PLAN_AGAINST),--against $(PLAN_AGAINST))

## Whether a wrong API key takes measurably longer or shorter to check than the right one (a report, no assertions).
bench-keys: build
	$(BUN) bench/key-timing.ts

## Four full allocation lists of a 1M-allocation pool at once: daemon RSS and allocate p50/p99 vs idle (about 1 minute).
bench-list: build
	$(BUN) bench/list-stream.ts

## The long variants of every reliability suite, one after another (as root; about 40 minutes).
## See docs/RELIABILITY.md for what each proves and its last figures.
soak: build
	bash hooks/install-packages $(TEST_PACKAGES) $(BENCH_PACKAGES)
	$(MAKE) test-crash
	$(MAKE) test-crash-hosts
	$(MAKE) test-crash-fleet
	$(MAKE) test-crash-fleet-hosts
	$(MAKE) soak-patroni
	$(MAKE) fuzz
	$(MAKE) fuzz-config
	SSH_FAULTS_HOLD_S=60 SSH_FAULTS_DOWN_S=180 SSH_FAULTS_REPORT=1 $(BUN_TEST) test/hosts/ssh-faults.test.ts
	$(MAKE) test-limits
	$(BUN) bench/flap.ts --rounds 5 --duration 20 --raw bench/results/raw/flap-soak.json
	$(BUN) bench/list-stream.ts

clean:
	rm -rf dist

## Build the container image (Dockerfile) with podman on a debootstrapped Debian base, run and check it (as root; about 3 minutes the first time, seconds with the base and layers cached).
image-test:
	bash hooks/image-test
