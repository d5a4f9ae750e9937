#!/usr/bin/env bash
# Interleaved decode benchmark of several models: on a shared VM whose speed drifts from minute to
# minute, back-to-back `qlm bench` runs of two models are not comparable; rounds that run every model
# once, one after the other, and medians over the rounds are.
#
#   bash Models/bench-ab.sh THREADS ROUNDS DIR1 DIR2 [DIR...]
#
# Each run: `qlm bench DIR -p 1 -n 128 -r 2 --threads THREADS`. Prints per model the median decode
# tok/s and every round's value, and the median of the per-round ratios to the first model.
# Env: QLM (binary, default .build/release/qlm), BENCH_ARGS (extra bench flags, e.g. "-p 512 -n 64").
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { echo "usage: bash Models/bench-ab.sh THREADS ROUNDS DIR1 DIR2 [DIR...]" >&2; exit 2; }
T=$1; R=$2; shift 2
Q=${QLM:-.build/release/qlm}
raw=$(mktemp); trap 'rm -f "$raw"' EXIT
for r in $(seq "$R"); do
  for d in "$@"; do
    # shellcheck disable=SC2086
    v=$("$Q" bench "$d" -p 1 -n 128 -r 2 --threads "$T" ${BENCH_ARGS:-} --json | python3 -c "import json,sys; print(json.load(sys.stdin)['decode_tps'])")
    echo "$r $d $v" >> "$raw"
  done
done
python3 - "$raw" "$@" <<'PY'
import sys, statistics, collections
raw, names = sys.argv[1], sys.argv[2:]
v = collections.defaultdict(dict)
for line in open(raw):
    r, d, x = line.split()
    v[d][int(r)] = float(x)
base = v[names[0]]
for n in names:
    vals = [v[n][r] for r in sorted(v[n])]
    ratio = statistics.median(v[n][r] / base[r] for r in v[n])
    print("%-48s median %7.1f tok/s   vs first %.3f   rounds: %s" % (n, statistics.median(vals), ratio, " ".join("%.1f" % x for x in vals)))
PY
