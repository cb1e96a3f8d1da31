#!/usr/bin/env bash
# Builds the release binary and installs it into DEST (default: ./dist). Dockerfile.gpu's build
# stage runs this, and so does CI, so the image's build steps are exercised without Docker.
set -euo pipefail
dest=${1:-dist}
cd "$(dirname "$0")/.."
cargo build --release --locked --bin mnist
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$dest"
install -m 0755 "$target/release/mnist" "$dest/mnist"
"$dest/mnist" --version
