#!/usr/bin/env bash
# Builds the packed-GEMV benchmark against Kernels/*.c and runs it.
#   Kernels/bench/run.sh            full table (all formats, 5 shapes, 1 and 2 threads; QB_FORMATS="lut4,affine4 g128"
#                                   limits it to those formats, QB_SHAPE=49152x576 to one shape)
#   Kernels/bench/run.sh quick      8192x8192 only
#   Kernels/bench/run.sh ceiling    per-core decode ceiling (L2-resident, thread CPU time) per ISA (QB_SHAPE=576x576:
#                                   another shape; QB_FORMATS as above; QB_PATHS="avx512+i16,avx2" limits the paths)
#   Kernels/bench/run.sh check      C-level correctness sweep of every format/ISA vs the reference (integer-
#                                   activation kernels: vs the reference on the activations they use)
#   Kernels/bench/run.sh neon-check the same sweep for AArch64 (scalar + NEON), cross-compiled and
#                                   run under qemu-aarch64 (needs libc6-dev-arm64-cross,
#                                   libgcc-12-dev-arm64-cross, qemu-user; BLAS/OpenMP stubbed out)
# QB_CFLAGS adds compiler flags to the x86 build (experiments, e.g. -DQLM_QPF_MIN=8192).
# Needs clang, libopenblas-dev, libomp (LLVM 14's libomp.so.5). OPENBLAS_CORETYPE is left as set.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kern="$(dirname "$here")"
out="${QBENCH_BIN:-${TMPDIR:-/tmp}/qlm-qbench}"
cc="${CC:-clang}"
omp="${QLM_LIBOMP:-/usr/lib/x86_64-linux-gnu/libomp.so.5}"
if [ "${1:-}" = "neon-check" ]; then
    sysroot="${QLM_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    cat > "$tmp/stubs.c" <<'STUBS'
void openblas_set_num_threads(int n) { (void)n; }
int openblas_get_num_threads(void) { return 1; }
void qlm_sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc, float beta) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0;
            for (int k = 0; k < K; k++) s += A[i * lda + k] * B[j * ldb + k];
            C[i * ldc + j] = s + (beta == 0 ? 0 : beta * C[i * ldc + j]);
        }
}
STUBS
    "$cc" --target=aarch64-linux-gnu --sysroot="$sysroot" --gcc-toolchain=/usr -O2 -std=gnu11 -DQLM_BENCH_MAIN \
        -I "$kern/include" -I "$kern" "$kern/qlm_quant.c" "$kern/qlm_qgemv_neon.c" "$kern/qlm_dispatch.c" \
        "$kern/qlm_dequant_gguf.c" "$kern/qlm_gemv_f32.c" "$here/qbench.c" "$tmp/stubs.c" -fuse-ld=lld -static -o "$tmp/qbench-arm" -lm
    rc=0
    qemu-aarch64 "$tmp/qbench-arm" check || rc=$?
    exit $rc
fi
# -Xclang -fopenmp: OpenMP codegen without the driver adding -lomp (the library is libomp.so.5).
"$cc" -O3 ${QB_CFLAGS:-} -std=gnu11 -fno-math-errno -Xclang -fopenmp -DQLM_BENCH_MAIN -I "$kern/include" \
    "$kern"/*.c "$here/qbench.c" -o "$out" -lopenblas "$omp" -lm -lpthread
mode="${1:-bench}"
case "$mode" in
    check) exec "$out" check ;;
    ceiling) exec "$out" ceiling ;;
    quick) exec "$out" bench quick ;;
    *) exec "$out" bench ;;
esac
