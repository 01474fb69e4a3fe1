#!/usr/bin/env bash
# The one script for a GPU machine (H100/H200, CUDA driver, PyTorch in python3; nothing is built
# there). Three modes:
#
#   scripts/gpu-check.sh --build   (here, on the CPU machine) build, with the "cuda" feature: the
#                                  tensor crate's test binary (kernel tests on the device, backend
#                                  conformance), the model parity test binaries and the facex binary;
#                                  copy them to .gpu-bin/ and the official model code's wheel to
#                                  .whl/ (both git-ignored via .git/info/exclude), to be carried
#   scripts/gpu-check.sh           (on the GPU machine; carry .gpu-bin and .whl) run the kernel
#                                  tests and the conformance harness on the device, the model
#                                  parity on the device (f32, bf16), then time each kernel against
#                                  its floor, our GEMM against cuBLAS, and the whole model (f32,
#                                  bf16; batch 1, 64) against PyTorch eager running the official
#                                  code, PyTorch's training step (the cost of a real training run),
#                                  Nsight Compute on two kernels, and the model's time per
#                                  kernel. Logs go to $OUT (or /tmp/gpu-check).
#   scripts/gpu-check.sh --profile-model   (on the GPU machine) only the last: per kernel, the
#                                  device time of one bf16 batch-64 forward
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.gpu-bin/tensor-cuda-tests

# The test executable cargo built for `target` (a lib or an integration test).
test_exe() {
    python3 -c 'import sys, json
want = sys.argv[1]
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == want:
        print(m["executable"])' "$1"
}

# Per kernel, the device time of one bf16 batch-64 forward of the whole model (Nsight Compute,
# one metric, application replay: no kernel is replayed or slowed by memory save/restore), as a
# table of kernel, launches, ms and share. `facex bench --iters 1` runs two passes (a warm-up and
# the timed one); the table gives one.
profile_model() {
    command -v ncu >/dev/null || { echo "no ncu"; return; }
    timeout 150 ncu --clock-control none --replay-mode application --metrics gpu__time_duration.sum --csv \
        --page raw --print-units base --log-file /tmp/ncu-model.csv \
        .gpu-bin/facex bench --device cuda --dtype bf16 --batch 64 --iters 1 >/dev/null 2>&1
    python3 - /tmp/ncu-model.csv <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head = rows[0]
name, dur = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
tot, cnt = collections.Counter(), collections.Counter()
for r in rows[1:]:
    try:
        t = float(r[dur].replace(",", ""))
    except ValueError:
        continue  # the units row
    tot[r[name]] += t / 2
    cnt[r[name]] += 0.5
all_ns = sum(tot.values())
print(f"one bf16 batch-64 forward: {all_ns / 1e6:.2f} ms of kernel time, {sum(cnt.values()):.0f} launches")
print(f"{'kernel':<28} {'launches':>8} {'ms':>8} {'share':>6}")
for k, t in tot.most_common():
    print(f"{k:<28} {cnt[k]:>8.0f} {t / 1e6:>8.3f} {100 * t / all_ns:>5.1f}%")
PY
}

if [[ "${1:-}" == "--profile-model" ]]; then
    if [[ ! -x .gpu-bin/facex && -f .gpu-pack/gpu-bin.tar.xz ]]; then mkdir -p .gpu-bin && tar xJf .gpu-pack/gpu-bin.tar.xz -C .gpu-bin; fi
    [[ -x .gpu-bin/facex ]] || { echo "no .gpu-bin/facex: build with --build and carry .gpu-bin"; exit 1; }
    profile_model
    exit 0
fi

if [[ "${1:-}" == "--build" ]]; then
    set -e
    mkdir -p .gpu-bin .whl
    for d in /.gpu-bin/ /.whl/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude; done
    exe=$(cargo test -p tensor --features cuda --lib --no-run --message-format=json 2>/dev/null | test_exe tensor)
    cp "$exe" "$BIN"
    exe=$(cargo test --features cuda --test device_parity --no-run --message-format=json 2>/dev/null | test_exe device_parity)
    cp "$exe" .gpu-bin/device-parity
    exe=$(cargo test --features cuda --test device_parity_head_dims --no-run --message-format=json 2>/dev/null |
        test_exe device_parity_head_dims)
    cp "$exe" .gpu-bin/device-parity-head-dims
    cargo build --release -q -p facex --features cuda
    cp "${CARGO_TARGET_DIR:-target}/release/facex" .gpu-bin/facex
    # Debug info would make them too large to carry (a device call takes 64 MiB in all).
    strip --strip-debug .gpu-bin/*
    ls .whl/facexformer_pipeline-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps \
        --only-binary=:all: --python-version 3.12 --platform any -d .whl facexformer-pipeline==0.2.8
    du -sh .gpu-bin .whl
    # The working tree travels too, and a call takes 64 MiB in all: carry the binaries as one xz
    # file (.gpu-pack, ~9 MiB; this script unpacks it there) and keep the tiny fixture's
    # grads.safetensors and model.pt (20 MiB, not used there) out of the tree during the call.
    mkdir -p .gpu-pack
    grep -qx "/.gpu-pack/" .git/info/exclude || echo "/.gpu-pack/" >>.git/info/exclude
    tar cJf .gpu-pack/gpu-bin.tar.xz -C .gpu-bin .
    du -sh .gpu-pack
    exit 0
fi

OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
if [[ ! -x $BIN && -f .gpu-pack/gpu-bin.tar.xz ]]; then mkdir -p .gpu-bin && tar xJf .gpu-pack/gpu-bin.tar.xz -C .gpu-bin; fi
[[ -x $BIN ]] || { echo "no $BIN: run scripts/gpu-check.sh --build on the build machine and carry .gpu-bin"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv

echo "== 1. kernel tests and the backend conformance harness on the device (vs CPU references)"
timeout 120 "$BIN" cuda:: --nocapture --test-threads=1 2>&1 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== 1b. the model on the device vs the official outputs (f32 and bf16)"
FACEX_FIXTURES=$PWD/tests/fixtures/facexformer-tiny timeout 60 .gpu-bin/device-parity cuda_ --nocapture --test-threads=1 2>&1 |
    tee "$OUT/parity.log"
parity_rc=${PIPESTATUS[0]}
# Swin head dims 24 and 64 (the attention kernel's padded and d64 instances), f32.
timeout 45 .gpu-bin/device-parity-head-dims cuda_ --nocapture --test-threads=1 2>&1 | tee -a "$OUT/parity.log"
[[ ${PIPESTATUS[0]} == 0 ]] || parity_rc=1

echo "== 2. timings (ours)"
BENCH_OUT=$OUT/ours.csv timeout 100 "$BIN" cuda_bench --ignored --nocapture 2>&1 | tee "$OUT/bench.log"

echo "== 3. cuBLAS (torch) at the same shapes, ceilings, and the table"
PYTHONUNBUFFERED=1 timeout 100 python3 - "$OUT/ours.csv" <<'PY' 2>&1 | tee "$OUT/table.txt"
import sys, torch
ours = [l.strip().split(",") for l in open(sys.argv[1]) if l.strip()]
dev = torch.device("cuda")

def time_ms(f, reps=20):
    f(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); f(); e.record(); e.synchronize()
        ts.append(s.elapsed_time(e))
    return sorted(ts)[len(ts) // 2]

# Ceilings measured here: copy bandwidth (read + write) and a large bf16 matrix product on random data.
x = torch.empty(1 << 28, dtype=torch.float32, device=dev).uniform_()
y = torch.empty_like(x)
bw = 2 * x.numel() * 4 / (time_ms(lambda: y.copy_(x)) * 1e-3)
del x, y
a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
peak = 2 * 8192 ** 3 / (time_ms(lambda: a @ a, 10) * 1e-3)
del a
print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e12:.2f} TB/s, bf16 matmul 8192^3 {peak / 1e12:.0f} TFLOP/s (torch {torch.__version__})")

rows = []
for name, ms, nbytes, flops in ours:
    ms, nbytes, flops = float(ms), float(nbytes), float(flops)
    if name.startswith("memcpy"):
        print(f"our dtod copy: {nbytes / (ms * 1e-3) / 1e12:.2f} TB/s")
        continue
    floor_ms = max(nbytes / bw, flops / peak) * 1e3
    cublas = ""
    if name.startswith("gemm_tc_bf16"):
        m, n, k = map(int, name.split()[1].split("x"))
        A = torch.randn(m, k, dtype=torch.bfloat16, device=dev)
        W = torch.randn(n, k, dtype=torch.bfloat16, device=dev)
        t = time_ms(lambda: torch.nn.functional.linear(A, W))
        cublas = f"{t * 1e3:9.1f} {t / ms:6.2f}x"
        del A, W
    tflops = f"{flops / (ms * 1e-3) / 1e12:7.1f}" if flops else "      -"
    gbs = f"{nbytes / (ms * 1e-3) / 1e9:7.0f}"
    rows.append(f"{name:<36} {ms * 1e3:9.1f} {floor_ms * 1e3:9.1f} {ms / floor_ms:6.2f}x {gbs} {tflops}  {cublas}")
print()
print(f"{'kernel':<36} {'ours us':>9} {'floor us':>9} {'/floor':>7} {'GB/s':>7} {'TFLOP/s':>7}  {'cuBLAS us':>9} {'ours/cuBLAS speed':>6}")
print("\n".join(rows))
PY
echo "== 4. the whole model (swin_b, random weights): facex on our kernels vs PyTorch eager, official code"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site
for dtype in f32 bf16; do
    for batch in 1 64; do
        ours=$(timeout 45 .gpu-bin/facex bench --device cuda --dtype $dtype --batch $batch --iters 10 2>&1 | tail -1)
        theirs=$(PYTHONUNBUFFERED=1 timeout 60 python3 scripts/bench_pytorch.py forward --device cuda --dtype $dtype \
            --batch $batch --iters 10 2>&1 | tail -1)
        a=$(sed -n 's/.*median \([0-9.]*\) ms.*/\1/p' <<<"$ours")
        b=$(sed -n 's/.*median \([0-9.]*\) ms.*/\1/p' <<<"$theirs")
        echo "$ours"
        echo "$theirs"
        echo "  -> $dtype batch $batch: facex throughput / pytorch eager = $(awk -v a="$a" -v b="$b" 'BEGIN{ if (a > 0) printf "%.2f", b / a; else print "n/a" }')x"
    done
done 2>&1 | tee "$OUT/model.txt"

# GPU_CHECK_SKIP="train ncu" leaves stages 5 and 6 out (a short lease).
SKIP=${GPU_CHECK_SKIP:-}
[[ $SKIP == *train* ]] || {
echo "== 5. a training step on the device, PyTorch (official code, bf16 autocast, AdamW): the peer figure for"
echo "   what a real training run costs on such a GPU (facex trains on the CPU; its device path is inference)"
for batch in 64; do
    PYTHONUNBUFFERED=1 timeout 60 python3 scripts/bench_pytorch.py train --device cuda --dtype bf16 --batch $batch --iters 5 2>&1 | tail -1
done 2>&1 | tee -a "$OUT/model.txt"
}

[[ $SKIP == *ncu* ]] || {
echo "== 6. where two kernels lose (Nsight Compute, clocks left alone): gemm_tc at 200704x384x128, attention_tc d32"
if command -v ncu >/dev/null; then
    sections="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats"
    { timeout 60 ncu --clock-control none $sections --kernel-name gemm_tc_bf16_bf16 --launch-skip 21 --launch-count 1 \
        "$BIN" cuda_bench --ignored 2>&1 | grep -v "^test \|^running\|^$"
      timeout 60 ncu --clock-control none $sections --kernel-name attention_tc_d32_bf16 --launch-count 1 \
        "$BIN" cuda_bench --ignored 2>&1 | grep -v "^test \|^running\|^$"; } >"$OUT/ncu.txt"
    grep -E "attention_tc|gemm_tc|Duration|Throughput|Achieved Occupancy|Registers Per|Theoretical Occ|Warp Cycles Per Issued|Block Limit" "$OUT/ncu.txt"
fi
}

echo "== 7. where the model's time goes on the device: per kernel, one bf16 batch-64 forward"
profile_model 2>&1 | tee -a "$OUT/ncu.txt"

echo "device tests exit code: $tests_rc, model parity exit code: $parity_rc"
[[ $tests_rc == 0 && $parity_rc == 0 ]]
