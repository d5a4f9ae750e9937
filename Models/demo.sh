#!/usr/bin/env bash
# One command for a new user: build qlm, fetch the default model, and run the main jobs on it:
# perplexity (first 8 WikiText-2 windows), greedy generation, a 4-bit quantization of the model,
# perplexity / generation / bench on the quantized folder.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libopenblas-dev libomp-dev >/dev/null 2>&1; then
  echo "demo: installing libopenblas-dev libomp-dev (apt)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libopenblas-dev libomp-dev
fi
swift build -c release
qlm=.build/release/qlm
model="$(bash Models/fetch-default.sh)"
set -x
$qlm perplexity "$model" --seqlen 2048 --windows 8
$qlm generate "$model" -p "The capital of France is" -n 30 --temp 0
out="Models/smollm2-rtn-w4g128"
[ -d "$out" ] || $qlm quantize "$model" --method rtn --bits 4 --group-size 128 -o "$out"
$qlm perplexity "$out" --seqlen 2048 --windows 8
$qlm generate "$out" -p "The capital of France is" -n 30 --temp 0
$qlm bench "$out" -p 512 -n 128 -r 3
