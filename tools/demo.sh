#!/usr/bin/env bash
# Set up the ROS-free core (.venv/cli) and reconstruct the example tabletop scene with the
# embedded CPU backend. Results: runs/example-<time>/ (result.json is also printed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/bootstrap.sh cli
out="runs/example-$(date +%Y%m%d-%H%M%S)"
.venv/cli/bin/sam3d-reconstruct --request examples/tabletop/request.json --output "$out"
echo >&2
echo "Done. Results in $ROOT/$out:" >&2
ls -1 "$out" "$out/objects" >&2
