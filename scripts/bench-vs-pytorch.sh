#!/usr/bin/env bash
# The full-size model (swin_b, random weights) on this machine's CPU: facex beside PyTorch running
# the official model code and, for inference, ONNX Runtime running its export, in the same run,
# each mode in its own process (for its peak memory).
#   scripts/bench-vs-pytorch.sh [THREADS] [--profile] [--rounds R]
# PyTorch + facexformer-pipeline (and onnxruntime + onnx for the third column) must be importable
# by $PYTHON (default python3). --profile adds each side's per-stage and per-op-kind tables.
# The bf16 rows: `facex bench --dtype bf16` (bf16 products, f32 accumulation, where the CPU has
# AVX512-BF16; it also prints each head's error against f32) beside PyTorch's CPU autocast.
#
# Rounds: a shared host's speed drifts by 15-30% within minutes, so one facex run followed by one
# PyTorch run measures the drift as much as the programs. With R rounds (default 3) every mode runs
# each side R times, the order rotated each round (facex first, then PyTorch first, then ORT
# first), and the ratio reported is the median of the R per-round ratios, with their range.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2; profile=""; rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="--profile" ;;
    --rounds) rounds=${2:?--rounds needs a count}; shift ;;
    [0-9]*) threads=$1 ;;
    *) echo "bench-vs-pytorch.sh: unknown argument $1 (expected THREADS, --profile, --rounds R)" >&2; exit 2 ;;
  esac
  shift
done
[ "$rounds" -ge 1 ] 2>/dev/null || { echo "bench-vs-pytorch.sh: --rounds $rounds is not a count >= 1" >&2; exit 2; }
py=${PYTHON:-python3}
cargo build --release -q -p facex
bin=target/release/facex
median() { sed -n 's/.*median \([0-9.]*\) s.*/\1/p' <<<"$1" | head -1; }
rss() { sed -n 's/.*peak RSS \([0-9.]*\) MiB.*/\1/p' <<<"$1" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else printf "-" }'; }
# "median (min-max)" of the numbers given, or "-" when there are none.
summary() {
  printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { printf "-"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    if (NR == 1) printf "%.2f", m; else printf "%.2f (%.2f-%.2f)", m, v[1], v[NR] }'
}
have_ort=false; $py -c "import onnxruntime" 2>/dev/null && have_ort=true
echo "CPU: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $threads threads, $rounds round(s) a mode"
for mode in "forward --batch 1 f32" "forward --batch 8 f32" "train --batch 8 f32" \
            "forward --batch 1 bf16" "forward --batch 8 bf16"; do
  set -- $mode
  flag=""; [ "$1" = train ] && flag="--train"
  dtype=$4
  # A batch-1 pass takes 0.1-0.3 s: a median of 3 moved by 25% when one pass was disturbed
  # (this script measured facex at 0.264 s where it takes 0.21), so ten of those, for every side.
  iters=3; [ "$3" = 1 ] && iters=10
  sides="facex pytorch"
  [ "$1" = forward ] && [ "$dtype" = f32 ] && $have_ort && sides="facex pytorch ort"
  vs_torch=(); vs_ort=(); mem=()
  for r in $(seq 1 "$rounds"); do
    # This round's order: the sides rotated r - 1 places.
    read -ra order <<<"$sides"
    n=${#order[@]}; shift_by=$(( (r - 1) % n ))
    order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
    declare -A t=()
    for side in "${order[@]}"; do
      case $side in
        facex) out=$($bin bench $flag --batch "$3" --threads "$threads" --iters $iters --dtype "$dtype" $profile) ;;
        pytorch) out=$($py scripts/bench_pytorch.py "$1" --batch "$3" --threads "$threads" --iters $iters \
                       --dtype "$dtype" $profile 2>/dev/null) ;;
        ort) out=$($py scripts/bench_pytorch.py ort --batch "$3" --threads "$threads" --iters $iters 2>/dev/null) ;;
      esac
      # Everything from the first round; only the timing line after it.
      if [ "$r" = 1 ]; then echo "$out"; else grep -m1 median <<<"$out" | sed "s/^/  round $r: /"; fi
      t[$side]=$(median "$out"); t[$side.rss]=$(rss "$out")
    done
    vs_torch+=("$(ratio "${t[facex]}" "${t[pytorch]}")")
    mem+=("$(ratio "${t[facex.rss]:-0}" "${t[pytorch.rss]:-0}")")
    [ -n "${t[ort]:-}" ] && vs_ort+=("$(ratio "${t[facex]}" "${t[ort]}")")
    unset t
  done
  line="  -> $1 batch $3 $dtype: facex/pytorch time ratio $(summary "${vs_torch[@]}")"
  [ ${#vs_ort[@]} -gt 0 ] && line="$line, facex/onnxruntime $(summary "${vs_ort[@]}")"
  line="$line; peak memory facex/pytorch $(summary "${mem[@]}")"
  echo "$line   (time per round: ${vs_torch[*]}${vs_ort[*]:+ / ${vs_ort[*]}})"
done
