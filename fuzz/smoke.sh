#!/usr/bin/env bash
# Fuzz smoke run for CI: builds every fuzz target and runs each over its committed seeds
# plus a few thousand mutated inputs. Fails on the first crash, leak or timeout, with
# the input libFuzzer saved under fuzz/artifacts/<target>/.
#
#   fuzz/smoke.sh            # all targets, 2000 runs each
#   RUNS=20000 fuzz/smoke.sh session_pair
#
# cargo fuzz wants a nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable one do.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
runs="${RUNS:-2000}"
start=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz smoke: building ${targets[*]}"
# The targets share one build of the crates below them; build them all in one go.
cargo fuzz build
echo "fuzz smoke: built in $(( $(date +%s) - start ))s"

# New inputs go to a scratch corpus: fuzz/corpus is for real runs.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    t0=$(date +%s%3N)
    mkdir -p "$scratch/$t" "seeds/$t"
    log="$scratch/$t.log"
    if ! cargo fuzz run "$t" "$scratch/$t" "seeds/$t" -- \
        -runs="$runs" -max_total_time=120 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        # The panic first: a long backtrace pushes it out of the tail.
        grep -m1 -A12 "panicked at" "$log" || true
        tail -n 60 "$log"
        echo "fuzz smoke: $t FAILED (input saved under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    ms=$(( $(date +%s%3N) - t0 ))
    # libFuzzer's own average counts whole seconds: 0 for a run under one.
    echo "fuzz smoke: $t ok, ${execs:-?} inputs in $(( ms / 1000 )).$(( ms % 1000 / 100 ))s" \
        "($(( ${execs:-0} * 1000 / (ms > 0 ? ms : 1) ))/s, process start included)"
    if grep -q "handshake loop" "$log"; then
        echo "fuzz smoke: $t known finding: $(grep -m1 -o 'handshake loop.*' "$log")"
    fi
done
echo "fuzz smoke: all ${#targets[@]} targets ok in $(( $(date +%s) - start ))s"
