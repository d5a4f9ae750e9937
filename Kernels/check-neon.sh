#!/usr/bin/env bash
# Compile-check every Kernels/*.c for AArch64 (NEON paths) with a cross sysroot.
# Needs: clang and libc6-dev-arm64-cross (sysroot /usr/aarch64-linux-gnu). Objects go to a temp dir.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sysroot="${QLM_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}"
cc="${CC:-clang}"
if [ ! -d "$sysroot/include" ]; then
    echo "check-neon: no AArch64 sysroot at $sysroot (apt-get install libc6-dev-arm64-cross)" >&2
    exit 1
fi
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "check-neon: compiler '$cc' not found" >&2
    exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
base=("$cc" --target=aarch64-linux-gnu --sysroot="$sysroot" -O2 -std=gnu11 -Wall -I "$here/include")

# The sysroot has no BLAS headers: borrow the host's cblas.h (declarations only) for the check.
if [ ! -f "$sysroot/include/cblas.h" ]; then
    mkdir -p "$tmp/blas"
    for h in cblas.h openblas_config.h; do
        for d in /usr/include/x86_64-linux-gnu /usr/include /usr/local/include; do
            if [ -f "$d/$h" ]; then cp "$d/$h" "$tmp/blas/$h"; break; fi
        done
    done
    [ -f "$tmp/blas/cblas.h" ] || echo "check-neon: note: no cblas.h found; files using BLAS may fail"
    base+=(-idirafter "$tmp/blas")
fi

# Use -fopenmp when the cross target accepts it, else check the non-OpenMP build.
omp=(-fopenmp)
echo 'int main(void){return 0;}' > "$tmp/probe.c"
if ! "${base[@]}" "${omp[@]}" -c "$tmp/probe.c" -o "$tmp/probe.o" 2>/dev/null; then
    echo "check-neon: -fopenmp not usable for aarch64; compiling without it"
    omp=()
fi

shopt -s nullglob
files=("$here"/*.c)
if [ ${#files[@]} -eq 0 ]; then
    echo "check-neon: no .c files in $here" >&2
    exit 1
fi
fail=0
for f in "${files[@]}"; do
    o="$tmp/$(basename "${f%.c}").o"
    if "${base[@]}" "${omp[@]}" -c "$f" -o "$o"; then
        echo "check-neon: ok   $(basename "$f") (aarch64${omp:+, -fopenmp})"
    else
        echo "check-neon: FAIL $(basename "$f")" >&2
        fail=1
    fi
done
exit $fail
