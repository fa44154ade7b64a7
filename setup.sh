#!/usr/bin/env bash
# One-command set-up: creates .venv/ in the repo and installs the pinned stack.
#   ./setup.sh              CPU and GPU machines alike (what CI runs; PyPI's torch 2.14.1 is a CUDA 13 build)
#   ./setup.sh --full-mmcv  optional: then replace mmcv-lite by full mmcv 2.1.0 with compiled ops
#                           (tools/full_mmcv.sh: built first, swapped in only if that worked; no preset needs it)
#   ./setup.sh --cuda       old name of --full-mmcv; GPU machines need only ./setup.sh now
# Needs Python 3.11 (override with PYTHON=...). See docs/stack.md for why each pin exists.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
FULL_MMCV=0
for arg in "$@"; do
  case "$arg" in
    --full-mmcv) FULL_MMCV=1 ;;
    --cuda)
      echo "setup.sh: --cuda is no longer needed on GPU machines (plain ./setup.sh installs the CUDA build of torch);" \
           "it now means --full-mmcv (optional full mmcv with compiled ops)" >&2
      FULL_MMCV=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (valid: --full-mmcv, --cuda, --help)" >&2; exit 2 ;;
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
"$VENV/bin/python" -c 'import rspose_tune, trainables, search_spaces, torch, mmpose, ray, optuna, xtcocotools.coco, optuna_dashboard, moto.server, mlflow, wandb; print("set-up OK: torch", torch.__version__, "(CUDA", torch.version.cuda, "available:", torch.cuda.is_available(), ") mmpose", mmpose.__version__, "ray", ray.__version__, "optuna", optuna.__version__)'
echo "setup.sh: done in $(( $(date +%s) - start )) s; activate with: source $VENV/bin/activate"
if [ "$FULL_MMCV" = 1 ]; then
  # Optional, after a working set-up: the venv keeps mmcv-lite unless full mmcv built and imports.
  if ! tools/full_mmcv.sh "$VENV"; then
    echo "setup.sh: the pinned stack is installed and works (with mmcv-lite); only the optional full mmcv failed" >&2
    exit 1
  fi
fi
