# initrd-sysext: build, test, install. `make test` is what CI runs.
TARGET  := x86_64-unknown-linux-musl
BIN     := target/$(TARGET)/release/initrd-sysext
PREFIX  ?= /usr
DESTDIR ?=

.PHONY: setup setup-rust build test lint test-unit test-image test-deb test-qemu demo bench fuzz deb install clean

# What the targets below need (.ci/packages, the musl target), installed only when missing.
setup: setup-rust
	.ci/setup.sh packages

setup-rust:
	.ci/setup.sh rust

build: setup-rust
	cargo build --release --locked --target $(TARGET)

# Everything: shell lint, unit and namespace tests, the podman image, the package, the QEMU boot
# scenarios.
test: lint test-unit test-image test-deb test-qemu

# Every shell script of the repository (a shebang naming bash or sh), through shellcheck.
lint: setup
	git ls-files -z | xargs -0 grep -lZE '^#!.*(bash|/sh)' | xargs -0 shellcheck -x

# Unit tests and the root-level namespace tests (fast; no QEMU).
test-unit: setup
	cargo test --locked

test-image: setup build
	sysext/podman/test.sh

test-qemu: setup build
	tests-qemu/run.sh

# The Debian package: target/deb/initrd-sysext_VERSION_amd64.deb (the path is the last line).
deb: build
	pkg/deb/build.sh $(BIN)

test-deb: setup build
	pkg/deb/test.sh $(BIN)

# Build everything needed and boot the first-boot scenario, showing its evidence.
demo: setup build
	tests-qemu/demo.sh

# Figures, and the baseline scenarios (upstream's ways to merge, next to ours).
bench: setup build
	bench/merge.sh
	tests-qemu/run.sh ensure-sysext ensure-sysext-without-oneshot systemd-sysroot upstream-provision
	tests-qemu/bench.sh
	tests-qemu/bench-verity.sh

# Fuzz each parser for FUZZ_SECONDS (default 600).
FUZZ_SECONDS ?= 600
# New inputs go to fuzz/corpus/ (ignored); fuzz/seeds/ stays as committed.
fuzz:
	for t in release cmdline ddi signature fstab confext_conf; do \
	  mkdir -p fuzz/corpus/$$t; \
	  cargo +nightly fuzz run -O $$t fuzz/corpus/$$t fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

install: build
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" pkg/install.sh $(BIN)

clean:
	cargo clean
