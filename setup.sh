#!/usr/bin/env bash
# One-command set-up: creates .venv/ in the repo and installs the pinned CPU stack.
#   ./setup.sh            CPU machine (default; what CI runs)
#   ./setup.sh --cuda     GPU machine: same pins, then full mmcv 2.1.0 with compiled ops via openmim
# Needs Python 3.11 (override with PYTHON=...). See README "Pinned stack" for why each pin exists.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
CUDA=0
for arg in "$@"; do
  case "$arg" in
    --cuda) CUDA=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (valid: --cuda, --help)" >&2; exit 2 ;;
  esac
done

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "setup.sh: needs Python 3.11 as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi

start=$(date +%s)
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# 1. Build tooling and numpy 2, which xtcocotools is compiled against.
"${PIP[@]}" install -q -r requirements/build.txt
# 2. xtcocotools from source against numpy 2 (its 1.14.3 wheel was built for numpy 1).
"${PIP[@]}" install -q --no-build-isolation --no-binary xtcocotools xtcocotools==1.14.3
# 3. The full lock, without dependency resolution: it is complete, and it keeps mmpose's
#    `chumpy` requirement (never imported, fails to build) out.
"${PIP[@]}" install -q --no-deps -r requirements/lock.txt
# 4. This project, editable (rspose_tune, trainables, search_spaces).
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .
if [ "$CUDA" = 1 ]; then
  # Full mmcv with compiled ops (EDPose, deformable attention); the mmcv.ops shim then stays inert.
  "${PIP[@]}" uninstall -y -q mmcv-lite   # same `mmcv` package directory as full mmcv
  "${PIP[@]}" install -q openmim
  "$VENV/bin/mim" install 'mmcv==2.1.0'
fi
"$VENV/bin/python" -c 'import rspose_tune, trainables, search_spaces, torch, mmpose, ray, optuna, xtcocotools.coco, optuna_dashboard, moto.server; print("set-up OK: torch", torch.__version__, "mmpose", mmpose.__version__, "ray", ray.__version__, "optuna", optuna.__version__)'
echo "setup.sh: done in $(( $(date +%s) - start )) s; activate with: source $VENV/bin/activate"
