# initrd-sysext: build, test, install. `make test` is what CI runs.
TARGET  := x86_64-unknown-linux-musl
BIN     := target/$(TARGET)/release/initrd-sysext
PREFIX  ?= /usr
DESTDIR ?=

.PHONY: build test test-unit test-image test-qemu demo bench fuzz install clean

build:
	cargo build --release --locked --target $(TARGET)

# Everything: unit and namespace tests, the podman image, the QEMU boot scenarios.
test: test-unit test-image test-qemu

# Unit tests and the root-level namespace tests (fast; no QEMU).
test-unit:
	cargo test --locked

test-image: build
	sysext/podman/test.sh

test-qemu: build
	tests-qemu/run.sh

# Build everything needed and boot the first-boot scenario, showing its evidence.
demo: build
	tests-qemu/demo.sh

bench: build
	bench/merge.sh
	tests-qemu/bench.sh
	tests-qemu/bench-verity.sh

# Fuzz each parser for FUZZ_SECONDS (default 600).
FUZZ_SECONDS ?= 600
# New inputs go to fuzz/corpus/ (ignored); fuzz/seeds/ stays as committed.
fuzz:
	for t in release cmdline ddi signature; do \
	  mkdir -p fuzz/corpus/$$t; \
	  cargo +nightly fuzz run -O $$t fuzz/corpus/$$t fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

install: build
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" dracut/install.sh $(BIN)

clean:
	cargo clean
