#!/usr/bin/env bash
# The main job on the shipped default: set up, enhance sample frames from ../shared/data into
# out/demo/, then evaluate on the held-out split and print the metrics table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
DATA=${ENDOLIGHT_DATA:-../shared/data}
endolight enhance "$DATA/sinus/clip-b" -o out/demo/sinus
endolight enhance "$DATA/nasal-dim" -o out/demo/nasal-dim
endolight enhance "$DATA/gastroscopy-fujifilm/WLI_normal/5.png" -o out/demo/gastroscopy
endolight eval -o out/demo/eval --max-side 640
