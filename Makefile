# Build, train, test and benchmark. Every target works on a fresh clone with Go installed.

GO ?= go
# The pure-Go backend is GoMLX's embedded one and runs everywhere; `make train BACKEND=auto`
# uses XLA when a PJRT plugin is installed.
BACKEND ?= go
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
TRAIN_FLAGS ?=
VENV ?= .venv
XLA_CPU_WHEEL ?= xla-cpu-pjrt==0.0.1

.PHONY: all build train data test test-short xla-cpu bench vet clean

all: build test

build:
	$(GO) build ./...

# Trains the default ViT (mnist-p7) with LookSAM-5 over AdamW on Fashion-MNIST, installing the
# dataset first when it is missing.
train: data
	$(GO) run ./cmd/train -backend $(BACKEND) -data-dir $(FASHION_MNIST_DIR) $(TRAIN_FLAGS)

# Installs Debian's dataset-fashion-mnist when its files are missing: with apt-get as root, with
# sudo otherwise, or prints what to do. --reinstall also restores files deleted from an installed
# package, which a plain install leaves missing.
data:
	@if [ -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ]; then exit 0; fi; \
	if [ "$(FASHION_MNIST_DIR)" != /usr/share/datasets/fashion-mnist ]; then \
	  echo "Fashion-MNIST not found in $(FASHION_MNIST_DIR): put its four IDX files there"; exit 1; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "Fashion-MNIST is missing and this system has no apt-get: download the four IDX files and run make train FASHION_MNIST_DIR=/their/dir"; exit 1; fi; \
	echo "Installing Debian's dataset-fashion-mnist ..."; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --reinstall dataset-fashion-mnist; \
	if [ ! -f "$(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
	  echo "Fashion-MNIST is still missing from $(FASHION_MNIST_DIR) after installing dataset-fashion-mnist"; exit 1; fi

# Runs every test, then the optimizer's hand-computed cases on the XLA backend (float16 included,
# which the pure-Go backend lacks) when the PJRT CPU plugin is installed. Without a plugin the XLA
# tests skip and say so; `make xla-cpu` installs one.
XLA_OPTIMIZER_TESTS ?= TestReuseStepUsesGv|TestSAMHandsBaseGs|TestSAMGradientAtPerturbedWeights|TestRhoZeroEqualsBase|TestStepCountMovesOncePerStep|TestLAMB|TestClipByGlobalNormOnce|TestZeroGradientGivesFiniteStep|TestLayerSAMZeroGradientTensor|TestParallelGsGivesZeroGv
test:
	$(GO) test -count=1 -timeout 20m ./...
	@if ls $(VENV)/lib/python3*/site-packages/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so >/dev/null 2>&1; then \
	  echo "Optimizer cases on the XLA backend:"; \
	  VITSAM_TEST_BACKEND=xla:cpu $(GO) test -count=1 -timeout 10m -run '$(XLA_OPTIMIZER_TESTS)' ./optimizers/looksam/; \
	else \
	  echo "No PJRT CPU plugin in $(VENV): the optimizer cases ran on the pure-Go backend only (make xla-cpu installs it)"; \
	fi

# The fast subset: slow training tests skip under -short.
test-short:
	$(GO) test -short ./...

# Installs the PJRT CPU plugin from PyPI into $(VENV), where pjrt.FindPlugins looks for it.
xla-cpu:
	test -x $(VENV)/bin/python3 || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check --quiet $(XLA_CPU_WHEEL)
	@ls -l $(VENV)/lib/python3*/site-packages/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so

bench:
	$(GO) run ./cmd/bench

vet:
	$(GO) vet ./...

clean:
	rm -rf bin runs
