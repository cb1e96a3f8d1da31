# Local targets for the mnist tool. Every cargo call uses the one `release` profile, so the
# heavy Burn dependencies compile once for build, test, bench and CI alike.

CARGO ?= cargo
MNIST := $(CARGO) run --release --quiet --
DEMO := demo
FASHION ?= /usr/share/datasets/fashion-mnist
# The image the GPU pipeline stages run (Dockerfile.gpu).
IMAGE ?= mnist:latest

.PHONY: build test demo bench lint clean-demo docker-gpu push

build:
	$(CARGO) build --release

test:
	$(CARGO) test --release --workspace

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# The whole workflow on the built-in sample: parse -> train -> stats -> infer -> image.
demo: build
	$(MNIST) parse --input data/mnist-sample --output $(DEMO)/csv
	$(MNIST) train --config configs/smoke.toml --data $(DEMO)/csv --output $(DEMO)/model
	$(MNIST) stats --model $(DEMO)/model --data $(DEMO)/csv --output $(DEMO)/stats
	mkdir -p $(DEMO)/digits
	head -n 16 $(DEMO)/csv/test.csv | cut -d, -f2- > $(DEMO)/digits/sample.csv
	$(MNIST) infer --model $(DEMO)/model --input $(DEMO)/digits --output $(DEMO)/inference
	$(MNIST) image --input $(DEMO)/inference --output $(DEMO)/images
	@echo "demo done: the GIF is $(DEMO)/images/sample.gif"

# Throughput figures on Fashion-MNIST (apt-get install dataset-fashion-mnist), one line each.
bench: build
	bench/run.sh "$(FASHION)"

clean-demo:
	rm -rf $(DEMO)

# The GPU image (needs a Docker engine): build, and push to the registry named in IMAGE.
docker-gpu:
	docker build -f Dockerfile.gpu -t $(IMAGE) .

push: docker-gpu
	docker push $(IMAGE)
