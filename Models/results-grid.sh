#!/usr/bin/env bash
# The README's method × configuration results grid, resumable: every step is skipped when its
# output already exists, so a killed run (or a later session) just runs this again.
#
#   bash Models/results-grid.sh [RESULTS_DIR]      (default: Models/results, git-ignored)
#
# Env: QLM (binary, default .build/release/qlm — copy it elsewhere if you rebuild meanwhile),
#      THREADS (perplexity --threads; default all cores), QTHREADS (quantize --threads; default all cores),
#      NSAMPLES (calibration windows, default 32; the quantize default is 128), PHASES ("quick full512"
#      etc.; default "quick full2048 full512"; "" quantizes only), ONLY (space-separated config names:
#      run just these, e.g. to split the grid between two processes that each get one core).
# Phases, in order: quantize every config (skipped if the folder exists), then
#   quick    — WikiText-2, seqlen 2048, first 8 windows (all configs, ~40 s each),
#   full2048 — all 148 windows at seqlen 2048 (~11 min each on 2 cores),
#   full512  — all 595 windows at seqlen 512.
# Each finished step appends a line to RESULTS_DIR/grid.tsv:
#   name  phase  ppl  se  total_bpw  linear_bpw  quantize_s  floor_s
#
#   bash Models/results-grid.sh table [RESULTS_DIR]   prints the README's markdown table from grid.tsv
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "table" ]; then
  python3 - "${2:-Models/results}/grid.tsv" <<'EOF'
import sys, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if len(f) < 8: continue
    name, phase, ppl, se, tb, lb, qs, fl = f
    r = rows.setdefault(name, {})
    r[phase] = (float(ppl), float(se)); r["bpw"] = (float(tb), float(lb)); r["time"] = (float(qs), float(fl))
methods = [("rtn", "RTN"), ("gptq", "GPTQ"), ("leanquant-affine", "LeanQuant affine"), ("leanquant-lut", "LeanQuant LUT"),
           ("quantease", "QuantEase"), ("quantease-out", "QuantEase + 1% outliers"), ("tesseraq", "TesseraQ (layer-wise)")]
settings = [("w4-row", "W4 per row"), ("w4-g128", "W4 g128"), ("w3-row", "W3 per row"), ("w3-g128", "W3 g128"),
            ("w2-g64", "W2 g64"), ("w2-row", "W2 per row")]
def fmt(v):
    if v is None: return "—"
    p, se = v
    return ("%.0f" % p) if p >= 1000 else ("%.2f ± %.2f" % (p, se))
print("| method | setting | bpw linears / all | PPL 8 × 2048 | PPL 148 × 2048 | PPL 595 × 512 | quantize s | × floor |")
print("|---|---|---|---|---|---|---|---|")
for sk, sn in settings:
    for mk, mn in methods:
        r = rows.get("%s-%s" % (mk, sk))
        if r is None: continue
        qs, fl = r["time"]
        ratio = "%.2f" % (qs / fl) if fl > 0 else "—"
        print("| %s | %s | %.2f / %.2f | %s | %s | %s | %.0f | %s |" % (mn, sn, r["bpw"][1], r["bpw"][0], fmt(r.get("quick")),
              fmt(r.get("full2048")), fmt(r.get("full512")), qs, ratio))
EOF
  exit 0
fi
R=${1:-Models/results}
Q=${QLM:-.build/release/qlm}
M=${MODEL:-Models/SmolLM2-135M-Instruct.Q4_1.gguf}
PHASES=${PHASES-"quick full2048 full512"}
CAL="--calib c4 --nsamples ${NSAMPLES:-32} --seqlen 512 --hessian f32"  # f32: the README table's Hessians
mkdir -p "$R/q"

# name | quantize flags. Priority order: the full-protocol phases run down this list.
CONFIGS=(
  "rtn-w3-g128|--method rtn --bits 3 --group-size 128"
  "gptq-w3-g128|--method gptq --bits 3 --group-size 128 $CAL --true-sequential --act-order"
  "leanquant-affine-w3-g128|--method leanquant --format affine --bits 3 --group-size 128 $CAL --true-sequential --act-order"
  "quantease-w3-g128|--method quantease --bits 3 --group-size 128 $CAL --true-sequential"
  "quantease-out-w3-g128|--method quantease --outliers 0.01 --bits 3 --group-size 128 $CAL --true-sequential"
  "tesseraq-w3-g128|--method tesseraq --bits 3 --group-size 128 $CAL --true-sequential"
  "rtn-w3-row|--method rtn --bits 3 --group-size -1"
  "gptq-w3-row|--method gptq --bits 3 --group-size -1 $CAL --true-sequential --act-order"
  "leanquant-affine-w3-row|--method leanquant --format affine --bits 3 --group-size -1 $CAL --true-sequential --act-order"
  "quantease-w3-row|--method quantease --bits 3 --group-size -1 $CAL --true-sequential"
  "quantease-out-w3-row|--method quantease --outliers 0.01 --bits 3 --group-size -1 $CAL --true-sequential"
  "tesseraq-w3-row|--method tesseraq --bits 3 --group-size -1 $CAL --true-sequential"
  "leanquant-lut-w3-row|--method leanquant --format lut --bits 3 --group-size -1 $CAL --true-sequential --act-order"
  "rtn-w2-g64|--method rtn --bits 2 --group-size 64"
  "gptq-w2-g64|--method gptq --bits 2 --group-size 64 $CAL --true-sequential --act-order"
  "leanquant-affine-w2-g64|--method leanquant --format affine --bits 2 --group-size 64 $CAL --true-sequential --act-order"
  "quantease-w2-g64|--method quantease --bits 2 --group-size 64 $CAL --true-sequential"
  "quantease-out-w2-g64|--method quantease --outliers 0.01 --bits 2 --group-size 64 $CAL --true-sequential"
  "tesseraq-w2-g64|--method tesseraq --bits 2 --group-size 64 $CAL --true-sequential"
  "leanquant-lut-w2-row|--method leanquant --format lut --bits 2 --group-size -1 $CAL --true-sequential --act-order"
  "rtn-w4-g128|--method rtn --bits 4 --group-size 128"
  "gptq-w4-g128|--method gptq --bits 4 --group-size 128 $CAL --true-sequential --act-order"
  "leanquant-affine-w4-g128|--method leanquant --format affine --bits 4 --group-size 128 $CAL --true-sequential --act-order"
  "quantease-w4-g128|--method quantease --bits 4 --group-size 128 $CAL --true-sequential"
  "quantease-out-w4-g128|--method quantease --outliers 0.01 --bits 4 --group-size 128 $CAL --true-sequential"
  "tesseraq-w4-g128|--method tesseraq --bits 4 --group-size 128 $CAL --true-sequential"
  "rtn-w4-row|--method rtn --bits 4 --group-size -1"
  "gptq-w4-row|--method gptq --bits 4 --group-size -1 $CAL --true-sequential --act-order"
  "leanquant-affine-w4-row|--method leanquant --format affine --bits 4 --group-size -1 $CAL --true-sequential --act-order"
  "quantease-w4-row|--method quantease --bits 4 --group-size -1 $CAL --true-sequential"
  "quantease-out-w4-row|--method quantease --outliers 0.01 --bits 4 --group-size -1 $CAL --true-sequential"
  "tesseraq-w4-row|--method tesseraq --bits 4 --group-size -1 $CAL --true-sequential"
  "leanquant-lut-w4-row|--method leanquant --format lut --bits 4 --group-size -1 $CAL --true-sequential --act-order"
)

manifest_fields() {  # total_bpw linear_bpw quantize_s floor_s
  python3 - "$1/manifest.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
t = d.get("timing", {})
print("%.4f\t%.4f\t%.1f\t%.1f" % (d["totalBitsPerWeight"], d["layerBitsPerWeight"], d.get("quantizeSeconds", 0), t.get("floor", 0)))
EOF
}

quantize() {  # name flags...
  local name=$1; shift
  [ -f "$R/q/$name/manifest.json" ] && return 0
  rm -rf "$R/q/$name" "$R/q/$name.partial"
  echo "[grid] quantize $name" >&2
  # shellcheck disable=SC2068
  $Q quantize "$M" -o "$R/q/$name" $@ ${QTHREADS:+--threads $QTHREADS} --json > "$R/q/$name.quant.jsonl" 2> "$R/q/$name.quant.err" \
    || { echo "[grid] quantize $name FAILED (see $R/q/$name.quant.err)" >&2; return 1; }
}

evaluate() {  # name phase
  local name=$1 phase=$2 args
  case $phase in
    quick) args="--seqlen 2048 --windows 8" ;;
    full2048) args="--seqlen 2048" ;;
    full512) args="--seqlen 512" ;;
  esac
  local out="$R/q/$name.$phase.json"
  [ -s "$out" ] && return 0
  [ -f "$R/q/$name/manifest.json" ] || return 0
  echo "[grid] $phase $name" >&2
  $Q perplexity "$R/q/$name" $args ${THREADS:+--threads $THREADS} --json > "$out.tmp" 2> "$R/q/$name.$phase.err" || { rm -f "$out.tmp"; return 1; }
  mv "$out.tmp" "$out"
  local ppl
  ppl=$(python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print('%.4f\t%.4f'%(d['ppl'],d['se']))" "$out")
  printf '%s\t%s\t%s\t%s\n' "$name" "$phase" "$ppl" "$(manifest_fields "$R/q/$name")" >> "$R/grid.tsv"
}

if [ -n "${ONLY:-}" ]; then
  picked=()
  for c in "${CONFIGS[@]}"; do [[ " $ONLY " == *" ${c%%|*} "* ]] && picked+=("$c"); done
  [ ${#picked[@]} -gt 0 ] || { echo "[grid] ONLY names no config: $ONLY" >&2; exit 1; }
  CONFIGS=("${picked[@]}")
fi
for c in "${CONFIGS[@]}"; do quantize "${c%%|*}" ${c#*|} || true; done
for phase in $PHASES; do
  for c in "${CONFIGS[@]}"; do evaluate "${c%%|*}" "$phase" || true; done
done
echo "[grid] done: $R/grid.tsv" >&2
