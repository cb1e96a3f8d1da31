# Sourced by the bench scripts: what each needs before measuring.
#   prepare NAME FASHION_DIR   checks the data, builds mnist ($MNIST; set it to measure another
#                              binary), makes $work (removed on exit) and parses Fashion-MNIST
#                              into $work/csv (parse's log: $work/parse.log); cd to the project
#   subset TRAIN_ROWS TEST_ROWS DIR   the first rows of $work/csv as another data directory

prepare() {
  local name=$1 fashion=$2
  [ -d "$fashion" ] || { echo "$name: $fashion missing (apt-get install dataset-fashion-mnist)" >&2; exit 1; }
  fashion=$(cd "$fashion" && pwd)
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  if [ -z "${MNIST:-}" ]; then
    cargo build --release --quiet
    MNIST=${CARGO_TARGET_DIR:-target}/release/mnist
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$MNIST" parse --input "$fashion" --output "$work/csv" 2> "$work/parse.log"
}

subset() {
  mkdir -p "$3"
  head -n "$1" "$work/csv/train.csv" > "$3/train.csv"
  head -n "$2" "$work/csv/test.csv" > "$3/test.csv"
}
