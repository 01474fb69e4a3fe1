#!/usr/bin/env bash
# The full-size model (swin_b, random weights) on this machine's CPU: facex beside PyTorch running
# the official model code, in the same run, each mode in its own process (for its peak memory).
#   scripts/bench-vs-pytorch.sh [THREADS]      (PyTorch + facexformer-pipeline must be importable
#                                               by $PYTHON, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
py=${PYTHON:-python3}
cargo build --release -q -p facex
bin=target/release/facex
for mode in "forward --batch 1" "forward --batch 8" "train --batch 8"; do
  set -- $mode
  flag=""; [ "$1" = train ] && flag="--train"
  ours=$($bin bench $flag --batch "$3" --threads "$threads" --iters 3)
  theirs=$($py scripts/bench_pytorch.py "$1" --batch "$3" --threads "$threads" --iters 3)
  echo "$ours"; echo "$theirs"
  a=$(sed -n 's/.*median \([0-9.]*\) s.*/\1/p' <<<"$ours"); b=$(sed -n 's/.*median \([0-9.]*\) s.*/\1/p' <<<"$theirs")
  echo "  -> $1 batch $3: facex/pytorch time ratio $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", a/b}')"
done
