# Outpost — the commands of the README. Every target that needs Debian
# packages installs the missing ones first (packaging/install-deps.sh).
SHELL := /bin/bash
JOBS ?= $(shell nproc)
DEPS := packaging/install-deps.sh
CMAKE_FLAGS ?=

.PHONY: all deps build check check-native build-check build-arm64 build-armhf deb demo bench fuzz format clean

all: build

deps:
	@$(DEPS) native

# Native build of everything into build/ (binaries in build/bin/).
build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j$(JOBS)

# The test build: ASan+UBSan, every test, in build-check/.
build-check: deps
	@cmake -S . -B build-check -DCMAKE_BUILD_TYPE=Debug -DOUTPOST_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-check -j$(JOBS)

# Every test through ctest (unit, integration, end-to-end, lint), after the
# native test build and the arm64 agent.
check: build-check build-arm64
	@$(DEPS) tools
	@cd build-check && ctest --output-on-failure -j$(JOBS) --timeout 600

# The agent cross-built for Arm into build-arm64/ and build-armhf/ with Debian's
# cross compilers and multiarch libraries (cross/toolchains/).
build-arm64:
	@$(DEPS) native arm64
	@cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cross/toolchains/aarch64-linux-gnu.cmake \
	  -DOUTPOST_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-arm64 --target outpost-agent -j$(JOBS)

build-armhf:
	@$(DEPS) native armhf
	@cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cross/toolchains/arm-linux-gnueabihf.cmake \
	  -DOUTPOST_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-armhf --target outpost-agent -j$(JOBS)

# The Debian packages into build/deb/ (docs/packaging.md): outpost-agent for
# amd64, arm64 and armhf, outpost-hub for amd64, built by debhelper with the
# distribution's hardening flags in build-pkg-<arch>/ (kept: a second run only
# rebuilds what changed), Depends from dpkg-shlibdeps, lintian errors fail.
# DEB_VERSION=... overrides the Debian version (default: the CMake project's).
# The packages into build/deb/. Every architecture whose cross libraries can
# be installed is built; if one cannot (a broken mirror), the others are still
# built and make deb then fails naming it.
deb:
	@$(DEPS) native arm64 tools
	@arches="amd64 arm64"; missing=""; \
	if $(DEPS) armhf; then arches="$$arches armhf"; else missing="armhf"; fi; \
	packaging/deb/build-debs.sh --out build/deb -j$(JOBS) \
	  $(if $(DEB_VERSION),--version $(DEB_VERSION)) $$arches || exit 1; \
	if [ -n "$$missing" ]; then \
	  echo "make deb: $$missing not built: its cross libraries could not be installed (see apt's error above)" >&2; \
	  exit 1; fi

# Broker + hub + one enrolled agent under ./demo-state/ (examples/demo.sh).
# DEMO_ONESHOT=1 exits right after the converged status.
DEMO_ONESHOT ?= 0
demo: build
	@DEMO_ONESHOT=$(DEMO_ONESHOT) examples/demo.sh

# The benchmarks of docs/benchmarks.md, on a release build in build-bench/
# (-O2, as the packages are built): one line per figure. Knobs such as
# BENCH_DEVICES=1000 or BENCH_SOAK_SECONDS=600 are listed in tests/bench/run.sh.
bench: deps
	@cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" \
	  -DOUTPOST_SANITIZE=OFF -DOUTPOST_BUILD_TESTS=OFF $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-bench -j$(JOBS) --target outpost-agent outpost-hub outpostctl outpost-sim \
	  >build-bench/build.log 2>&1 || { tail -40 build-bench/build.log; exit 1; }
	@tests/bench/run.sh build-bench/bin

# libFuzzer targets (tests/e2e/fuzz, docs/testing.md) built with clang into
# build-fuzz/ (-fsanitize=fuzzer,address,undefined), each run for
# FUZZ_SECONDS (default 60); prints the executions per target and fails on
# a finding. (The short smoke run of the same targets is part of make check.)
fuzz:
	@$(DEPS) native fuzz
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOUTPOST_FUZZ=ON -DOUTPOST_SANITIZE=ON \
	  -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link \
	  $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-fuzz --target fuzz_targets -j$(JOBS)
	@tests/e2e/fuzz/run-fuzzers.sh build-fuzz $(or $(FUZZ_SECONDS),60)

# Rewrites every tracked C++ file in the checked-in style.
format:
	@git ls-files -- '*.cpp' '*.hpp' '*.h' | xargs -r clang-format -i

clean:
	rm -rf build build-check build-arm64 build-armhf
