#!/usr/bin/env bash
# Bounded fuzzing of every parser that reads a user's file (docs/fuzzing.md).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: 20 s per target, every target. Needs nightly and cargo-fuzz
# (`cargo +nightly install cargo-fuzz`). The committed seeds (fuzz/corpus/<target>) are read,
# never written: what libFuzzer finds goes to fuzz/work/<target>, crashes to fuzz/artifacts/.
# Exit status: non-zero when any target crashed, timed out or ran out of memory.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(checkpoint_zip_pickle safetensors image annotations mat_v5 hdf5)
fi
# No sanitizer: the parsers are safe Rust (the only C is libjpeg-turbo, which cargo-fuzz does not
# instrument anyway); debug assertions on, so that integer overflow is a crash.
flags=(-s none --debug-assertions)
cargo +nightly fuzz build "${flags[@]}"
# Run the built binaries directly (`cargo fuzz run` would rebuild first; in a tree being edited
# that means one rebuild per target).
bin=fuzz/target/x86_64-unknown-linux-gnu/release
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    log="fuzz/work/$t.log"
    if "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$secs" -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 "fuzz/work/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "$t: $result, $execs executions in ${secs} s (log: $log)"
    [ "$result" = ok ] || grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5
done
exit $status
