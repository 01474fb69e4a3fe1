#!/usr/bin/env bash
# Regenerates kernels/ptx/kernels.ptx from the kernels crate (rustc's NVPTX target).
#
#   scripts/ptx.sh            rebuild and overwrite the committed PTX
#   scripts/ptx.sh --check    rebuild into a temp file, fail if it differs from the committed one,
#                             then assemble it with ptxas for sm_80 and sm_90 and print registers,
#                             stack and spills per kernel (fails if any kernel spills or has a
#                             local stack frame)
#
# Needs the pinned toolchain's rust-src and llvm-bitcode-linker (rust-toolchain.toml). ptxas comes
# from the PyPI wheel nvidia-cuda-nvcc-cu12 (downloaded once into ~/.cache/facex-nvcc) unless
# $PTXAS points at one.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

TOOLCHAIN=1.99.1
TARGET_DIR=${CARGO_TARGET_DIR:-target}/ptx
OUT=kernels/ptx/kernels.ptx

build() {
    # RUSTC_BOOTSTRAP only here: the device build needs -Zbuild-std and the abi_ptx feature.
    # sm_80 + PTX 7.8: bf16 mma.sync and ldmatrix; the driver JIT-compiles it for newer GPUs.
    # panic=immediate-abort: a bounds check can never leave an unresolved extern in the PTX.
    # A higher unroll threshold: the GEMM's 4x4 accumulator tiles and attention's q and
    # accumulator arrays (up to 64 lanes a thread, with masked loads and stores for padded head
    # dims) must stay in registers, which needs their loops fully unrolled (constant indices);
    # otherwise they go to local memory. (1000 left attention_d64_bf16 and _d128 on the stack;
    # raising it changed no other kernel's PTX.)
    RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_NVPTX64_NVIDIA_CUDA_RUSTFLAGS="-C target-cpu=sm_80 -C target-feature=+ptx78 -C debuginfo=0 -Zunstable-options -C panic=immediate-abort -C llvm-args=-unroll-threshold=4000" \
        CARGO_TARGET_DIR="$TARGET_DIR" \
        cargo +$TOOLCHAIN rustc -q -p kernels --release --target nvptx64-nvidia-cuda \
        -Zbuild-std=core --crate-type cdylib 2> >(grep -v "unstable feature specified for .-Ctarget-feature.\|this feature is not stably supported\|^ *|$\|^ *= note\|^warning: .kernels. (lib) generated" >&2)
    local ptx="$TARGET_DIR/nvptx64-nvidia-cuda/release/kernels.ptx"
    # Only dynamic shared memory may be extern (`.extern .shared .b8 x[]`); an extern function
    # would be an unresolved call (a panic path, a libm function).
    if grep -q "\.extern \.func" "$ptx"; then
        echo "ptx.sh: $ptx has unresolved external functions:" >&2
        grep "\.extern \.func" "$ptx" >&2
        exit 1
    fi
    # The dynamic shared memory symbols carry a hash; give them stable names so the output only
    # changes when the code does.
    sed -E 's/anon_\$_[0-9a-f]+_\$_([0-9]+)/dyn_smem_\1/g' "$ptx" >"$ptx.stable"
    echo "$ptx.stable"
}

find_ptxas() {
    if [[ -n "${PTXAS:-}" ]]; then echo "$PTXAS"; return; fi
    local cache=${XDG_CACHE_HOME:-$HOME/.cache}/facex-nvcc
    local bin=$cache/nvidia/cuda_nvcc/bin/ptxas
    if [[ ! -x $bin ]]; then
        mkdir -p "$cache"
        python3 -m pip download -q nvidia-cuda-nvcc-cu12==12.9.86 --no-deps -d "$cache" >&2
        (cd "$cache" && python3 -m zipfile -e nvidia_cuda_nvcc_cu12-12.9.86-*.whl . && chmod +x nvidia/cuda_nvcc/bin/ptxas)
    fi
    echo "$bin"
}

if [[ "${1:-}" == "--check" ]]; then
    ptx=$(build)
    if ! diff -q "$ptx" "$OUT" >/dev/null; then
        echo "ptx.sh --check: $OUT is stale; run scripts/ptx.sh and commit it" >&2
        diff "$ptx" "$OUT" | head -20 >&2
        exit 1
    fi
    echo "ptx.sh --check: $OUT matches the kernels crate"
    ptxas=$(find_ptxas)
    status=0
    for arch in sm_80 sm_90; do
        echo "== ptxas -arch=$arch"
        report=$("$ptxas" -arch=$arch -v "$OUT" -o /dev/null 2>&1)
        # One line per kernel: name, registers, stack frame, spill stores/loads.
        echo "$report" | awk '
            /Compiling entry function/ { gsub(/\047/, "", $7); name = $7 }
            /bytes stack frame/ { frame = $1; sst = $5; sld = $9 }
            /Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) if ($i == "registers,") regs = $(i-1);
                                     printf "  %-28s regs %4s  stack %4s  spill st/ld %s/%s\n", name, regs, frame, sst, sld }'
        if echo "$report" | grep -q "[1-9][0-9]* bytes spill"; then
            echo "ptx.sh --check: spills on $arch" >&2
            status=1
        fi
        # A stack frame without spills is an array LLVM left in local memory (a loop it did not
        # unroll, a closure it did not inline): as slow as a spill.
        if echo "$report" | grep -q "[1-9][0-9]* bytes stack frame"; then
            echo "ptx.sh --check: a local stack frame on $arch" >&2
            status=1
        fi
    done
    exit $status
fi

ptx=$(build)
cp "$ptx" "$OUT"
echo "wrote $OUT ($(grep -c '^\.visible \.entry' "$OUT") kernels)"
