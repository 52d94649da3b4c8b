#!/usr/bin/env bash
# Check the robot-style flow inside a pip venv: `colcon build` of sam3d_ros into a fresh
# workspace, `source install/setup.bash`, and import the generated interfaces beside the core.
#   tools/check_colcon.sh [jazzy|kilted]     (after tools/bootstrap.sh for that distro)
set -eo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
distro="${1:-jazzy}"
ws="$(mktemp -d)"
trap 'rm -rf "$ws"' EXIT
# shellcheck disable=SC1091
source "$ROOT/.venv/$distro/bin/activate"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV"
cd "$ws"
colcon build --paths "$ROOT" --cmake-args -DBUILD_TESTING=OFF >"$ws/colcon.out" 2>&1 \
  || { cat "$ws/colcon.out"; tail -n 40 "$ws"/log/latest_build/sam3d_ros/stdout_stderr.log; exit 1; }
# shellcheck disable=SC1091
source "$ws/install/setup.bash"
python -P -c "
import sam3d_ros, sam3d_ros.core.engine
from sam3d_ros.msg import ReconstructedObjectArray
from sam3d_ros.action import Reconstruct
assert sam3d_ros.__file__.startswith('$ws/install/'), sam3d_ros.__file__
print('colcon build in the $distro venv: OK ->', sam3d_ros.__file__)
"
test -x "$ws/install/sam3d_ros/lib/sam3d_ros/sam3d_node"
test -f "$ws/install/sam3d_ros/share/sam3d_ros/package.xml"
