#!/usr/bin/env bash
# One bootstrap for README, CI and developers.
#
#   tools/bootstrap.sh [jazzy|kilted|all|cli]
#
# * A ROS 2 distro is sourced (ROS_DISTRO set, colcon on PATH): colcon-build the package into
#   ./install against it (rosdep provides tf2_msgs, vision_msgs, moveit_msgs, ...).
# * Otherwise, per distro: a venv .venv/<distro> with the ROS 2 PyPI wheels and the project's
#   test dependencies; tf2_msgs, vision_msgs, object_recognition_msgs and moveit_msgs (not on
#   PyPI; pip_only_interfaces/) and sam3d_ros built with CMake and
#   installed into the venv. `cli`: a venv .venv/cli with only the ROS-free core (editable).
#
# Idempotent: requirements are re-installed only when their files change (stamp = hash), and the
# CMake builds are incremental, so a second run with nothing changed takes a few seconds.
set -eo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
PIP_FLAGS=(--quiet --disable-pip-version-check)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# pip, with its chatter kept in a log that is shown only when it fails.
pip_in() {  # pip_in VENV ARGS...
  local venv="$1"; shift
  "$venv/bin/python" -m pip "$@" "${PIP_FLAGS[@]}" >>"$venv.pip.log" 2>&1 \
    || { grep -v 'is ignored: it is neither' "$venv.pip.log" | tail -n 40 >&2; return 1; }
}

# Hash of the given files' contents without comments and blank lines, for the "already
# installed" stamps (editing a comment must not rebuild a venv).
stamp_of() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$@" | sha256sum | cut -d' ' -f1; }

ensure_venv() {  # ensure_venv DIR STAMP_TEXT INSTALL_FUNCTION
  local venv="$1" want="$2" installer="$3"
  if [[ -f "$venv/.sam3d_stamp" && "$(cat "$venv/.sam3d_stamp")" == "$want" ]]; then
    log "$venv is up to date"
    return
  fi
  log "creating $venv (a few minutes on a fresh machine)"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  mkdir -p "$(dirname "$venv")"
  # colcon crawling the repository must not mistake the wheels' share/*/package.xml for packages.
  touch "$(dirname "$venv")/COLCON_IGNORE"
  rm -f "$venv.pip.log"
  pip_in "$venv" install --upgrade pip
  "$installer" "$venv"
  echo "$want" >"$venv/.sam3d_stamp"
}

install_core() {
  pip_in "$1" install -r "$ROOT/requirements/core.txt"
  pip_in "$1" install --no-deps -e "$ROOT"
}

install_ros_distro() {
  local venv="$1" distro
  distro="$(basename "$venv")"
  pip_in "$venv" install -r "$ROOT/requirements/ros-$distro.txt" \
    -r "$ROOT/requirements/test.txt" -r "$ROOT/requirements/models.txt"
  pip_in "$venv" install --no-deps -r "$ROOT/requirements/test-nodeps.txt"
}

cmake_package() {  # cmake_package VENV SOURCE_DIR BUILD_DIR
  local venv="$1" src="$2" build="$3"
  mkdir -p "$(dirname "$build")"
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DBUILD_TESTING=OFF \
      -DPython3_EXECUTABLE="$venv/bin/python3" -DCMAKE_BUILD_TYPE=Release >"$build.log" 2>&1 \
      || { cat "$build.log" >&2; return 1; }
  fi
  { cmake --build "$build" -j"$(nproc)" && cmake --install "$build"; } >>"$build.log" 2>&1 \
    || { tail -n 60 "$build.log" >&2; return 1; }
}

build_pip_distro() {
  local distro="$1" venv="$ROOT/.venv/$1" stamp
  stamp="$(stamp_of "$ROOT"/requirements/{core,test,test-nodeps,models,ros-"$distro"}.txt)"
  ensure_venv "$venv" "$stamp" install_ros_distro
  mkdir -p "$ROOT/build"
  touch "$ROOT/build/COLCON_IGNORE"
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
  export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
  local t0=$SECONDS
  # In dependency order: moveit_msgs needs object_recognition_msgs.
  for pkg in tf2_msgs vision_msgs object_recognition_msgs moveit_msgs; do
    cmake_package "$venv" "$ROOT/pip_only_interfaces/$pkg" "$ROOT/build/$distro/$pkg"
  done
  cmake_package "$venv" "$ROOT" "$ROOT/build/$distro/sam3d_ros"
  deactivate
  log "$distro: interfaces and sam3d_ros built and installed into $venv ($((SECONDS - t0)) s)"
}

build_with_sourced_ros() {
  log "ROS 2 $ROS_DISTRO is sourced: colcon build into $ROOT/install"
  cd "$ROOT"
  colcon build --paths "$ROOT" --cmake-args -DBUILD_TESTING=OFF
}

# One bootstrap at a time per checkout (parallel runs would share CMake build directories).
mkdir -p "$ROOT/build"
exec 9>"$ROOT/build/.bootstrap.lock"
flock 9

target="${1:-all}"
case "$target" in
  cli)
    ensure_venv "$ROOT/.venv/cli" "$(stamp_of "$ROOT/requirements/core.txt" "$ROOT/setup.py")" install_core ;;
  jazzy|kilted)
    if [[ -n "${ROS_DISTRO:-}" ]] && command -v colcon >/dev/null; then build_with_sourced_ros
    else build_pip_distro "$target"; fi ;;
  all)
    if [[ -n "${ROS_DISTRO:-}" ]] && command -v colcon >/dev/null; then build_with_sourced_ros
    else build_pip_distro jazzy; build_pip_distro kilted; fi ;;
  *) echo "usage: $0 [jazzy|kilted|all|cli]" >&2; exit 2 ;;
esac
