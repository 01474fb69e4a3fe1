#!/usr/bin/env bash
# The full-size model (swin_b, random weights) on this machine's CPU: facex beside PyTorch running
# the official model code and, for inference, ONNX Runtime running its export, in the same run,
# each mode in its own process (for its peak memory).
#   scripts/bench-vs-pytorch.sh [THREADS] [--profile]
# PyTorch + facexformer-pipeline (and onnxruntime + onnx for the third column) must be importable
# by $PYTHON (default python3). --profile adds each side's per-stage and per-op-kind tables.
# The bf16 rows: `facex bench --dtype bf16` (bf16 products, f32 accumulation, where the CPU has
# AVX512-BF16; it also prints each head's error against f32) beside PyTorch's CPU autocast.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
profile=""; [ "${2:-}" = --profile ] && profile="--profile"
py=${PYTHON:-python3}
cargo build --release -q -p facex
bin=target/release/facex
median() { sed -n 's/.*median \([0-9.]*\) s.*/\1/p' <<<"$1" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else printf "-" }'; }
echo "CPU: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $threads threads"
for mode in "forward --batch 1 f32" "forward --batch 8 f32" "train --batch 8 f32" \
            "forward --batch 1 bf16" "forward --batch 8 bf16"; do
  set -- $mode
  flag=""; [ "$1" = train ] && flag="--train"
  dtype=$4
  # A batch-1 pass takes 0.1-0.3 s: a median of 3 moved by 25% when one pass was disturbed
  # (this script measured facex at 0.264 s where it takes 0.21), so ten of those, for every side.
  iters=3; [ "$3" = 1 ] && iters=10
  ours=$($bin bench $flag --batch "$3" --threads "$threads" --iters $iters --dtype "$dtype" $profile)
  theirs=$($py scripts/bench_pytorch.py "$1" --batch "$3" --threads "$threads" --iters $iters --dtype "$dtype" $profile 2>/dev/null)
  echo "$ours"; echo "$theirs"
  a=$(median "$ours"); b=$(median "$theirs")
  line="  -> $1 batch $3 $dtype: facex/pytorch time ratio $(ratio "$a" "$b")"
  if [ "$1" = forward ] && [ "$dtype" = f32 ] && $py -c "import onnxruntime" 2>/dev/null; then
    ort=$($py scripts/bench_pytorch.py ort --batch "$3" --threads "$threads" --iters $iters 2>/dev/null)
    echo "$ort"
    line="$line, facex/onnxruntime $(ratio "$a" "$(median "$ort")")"
  fi
  echo "$line"
done
