# Local targets for the mnist tool. Every cargo call uses the one `release` profile, so the
# heavy Burn dependencies compile once for build, test, bench and CI alike.

CARGO ?= cargo
MNIST_RUN := $(CARGO) run --release --quiet --
DEMO := demo
FASHION ?= /usr/share/datasets/fashion-mnist
# The image every pipeline stage runs (Dockerfile.gpu): the specs name it as ${MNIST_IMAGE}.
IMAGE ?= mnist:latest
# The training config the `model` pipeline reads from the training-config repo.
CONFIG ?= configs/cnn.toml
# A sweep file, and where `mnist sweep` writes its trial configs (one directory per sweep).
SWEEP ?= configs/sweeps/smoke-lr.toml
SWEEP_DIR ?= sweep
PACHCTL ?= pachctl
# The model pipeline's spec: `model` passes the W&B key as WANDB_API_KEY, `model-secret-file`
# mounts it as /secrets/wandb/key.
MODEL_SPEC ?= model
# Pipelines in dependency order.
PIPELINES := mnist-csv $(MODEL_SPEC) select stats inference image
REPOS := mnist training-config digits
# Pipeline names, downstream first, for deleting.
PIPELINE_NAMES_REVERSED := image inference stats select model mnist-csv

# Ends a command inside $(foreach): each becomes its own recipe line, echoed as it runs.
define run


endef

# What the tests need beyond Rust: Debian's Fashion-MNIST, Mesa's software Vulkan (the wgpu
# tests run on it), qemu's user-mode emulation (the CPU tests run the binary as older CPUs),
# pytest with jsonschema for the pipeline specs, and the official W&B SDK that checks the fake
# W&B server of the tests (with numpy and pillow, which its images need).
APT_PACKAGES := dataset-fashion-mnist mesa-vulkan-drivers libvulkan1 qemu-user
PIP_PACKAGES := pytest==8.3.5 jsonschema==4.26.0 wandb==0.31.0 numpy==2.4.6 pillow==13.0.0
# What the export tests load the exported models with (PyTorch from PyPI: ~3 GB with its CUDA
# libraries, which it needs to import even on a CPU; installed once per machine).
PIP_PACKAGES += onnx==1.23.2 onnxruntime==1.32.0 safetensors==0.8.0 torch==2.15.0
SUDO ?= $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup build test demo bench bench-compare bench-gpu profile lint clean-demo docker-gpu push all repos secret upload sweep-push sweep-watch sweep-local pipelines update-pipelines clean

build:
	$(CARGO) build --release

setup:
	dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); }
	python3 -m pip install -q --disable-pip-version-check $(PIP_PACKAGES)

# The Rust tests, then the pipeline specs and the rehearsal of the DAG (Python: pytest and
# jsonschema) and the exports in ONNX Runtime and PyTorch, against the binary the first step
# built.
test:
	$(CARGO) test --release --workspace
	python3 -m pytest -q tests/pipelines tests/exports

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# The whole workflow on the built-in sample: parse -> train -> stats -> infer -> image.
demo: build
	$(MNIST_RUN) parse --input data/mnist-sample --output $(DEMO)/csv
	$(MNIST_RUN) train --config configs/smoke.toml --data $(DEMO)/csv --output $(DEMO)/model
	$(MNIST_RUN) stats --model $(DEMO)/model --data $(DEMO)/csv --output $(DEMO)/stats
	mkdir -p $(DEMO)/digits
	head -n 16 $(DEMO)/csv/test.csv | cut -d, -f2- > $(DEMO)/digits/sample.csv
	$(MNIST_RUN) infer --model $(DEMO)/model --input $(DEMO)/digits --output $(DEMO)/inference
	$(MNIST_RUN) image --input $(DEMO)/inference --output $(DEMO)/images
	@echo "demo done: the GIF is $(DEMO)/images/sample.gif; the model's pictures are in $(DEMO)/stats"

# Throughput figures on Fashion-MNIST (apt-get install dataset-fashion-mnist), one line each.
bench: build
	bench/run.sh "$(FASHION)"

# CPU training and inference beside PyTorch's (PYTHON: a python with torch and numpy).
bench-compare: build
	bench/compare.sh "$(FASHION)"

# On a machine with an NVIDIA GPU: mnist on wgpu (cold and warm GPU cache) beside PyTorch CUDA
# (PYTHON: a python with torch built for CUDA, and numpy).
bench-gpu: build
	bench/gpu.sh "$(FASHION)"

# Where a CPU training step's time goes, per operation (needs perf). CONFIG: the config to profile.
CONFIG ?= configs/cnn.toml
profile: build
	bench/profile.sh "$(CONFIG)" "$(FASHION)"

clean-demo:
	rm -rf $(DEMO)

# The GPU image (needs a Docker engine): build, and push to the registry named in IMAGE.
docker-gpu:
	docker build -f Dockerfile.gpu -t $(IMAGE) .

push: docker-gpu
	docker push $(IMAGE)

# --- Pachyderm -------------------------------------------------------------------------------
# From an empty cluster: repos, the W&B secret, the sample data and config, then the pipelines.
all: repos secret upload pipelines

repos:
	$(foreach repo,$(REPOS),$(PACHCTL) create repo $(repo)$(run))

# Delete-then-create, so a changed key replaces the old one. pipelines/secrets.json is yours
# (git-ignored): copy pipelines/secrets.example.json and put your W&B API key in it.
secret:
	-$(PACHCTL) delete secret wandb
	$(PACHCTL) create secret -f pipelines/secrets.json

upload:
	$(PACHCTL) put file -r mnist@master:/ -f data/mnist-sample
	$(PACHCTL) put file training-config@master:/$(notdir $(CONFIG)) -f $(CONFIG)
	$(PACHCTL) put file -r digits@master:/ -f data/digits

# A sweep into training-config: one config per trial, each a datum of `model` (trained in
# parallel on the GPU nodes); created in W&B as one sweep when WANDB_API_KEY (or ~/.netrc) has a
# key. Adding configs later trains only those, and `select` ranks them all again.
sweep-push: build
	$(MNIST_RUN) sweep --sweep $(SWEEP) --output $(SWEEP_DIR)
	$(PACHCTL) put file -r training-config@master:/ -f $(SWEEP_DIR)/configs

# The sweep's progress: the training jobs, the models trained so far, and the leaderboard.
sweep-watch:
	$(PACHCTL) list job --pipeline model
	$(PACHCTL) list file model@master
	-$(PACHCTL) get file select@master:/leaderboard.md

# The sweep on this machine: train every trial (JOBS at a time) and rank them.
JOBS ?= 1
sweep-local: build
	$(MNIST_RUN) sweep --sweep $(SWEEP) --output $(SWEEP_DIR) --run --jobs $(JOBS)

pipelines:
	$(foreach p,$(PIPELINES),sed 's|$${MNIST_IMAGE}|$(IMAGE)|g' pipelines/$(p).json | $(PACHCTL) create pipeline -f -$(run))

update-pipelines:
	$(foreach p,$(PIPELINES),sed 's|$${MNIST_IMAGE}|$(IMAGE)|g' pipelines/$(p).json | $(PACHCTL) update pipeline -f -$(run))

clean:
	$(foreach p,$(PIPELINE_NAMES_REVERSED),-$(PACHCTL) delete pipeline $(p)$(run))
	$(foreach repo,$(REPOS),-$(PACHCTL) delete repo $(repo)$(run))
	-$(PACHCTL) delete secret wandb
