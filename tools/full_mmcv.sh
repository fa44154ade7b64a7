#!/usr/bin/env bash
# Replace mmcv-lite by full mmcv 2.1.0 (compiled ops) in an existing venv, without ever leaving
# the venv with no mmcv:
#   tools/full_mmcv.sh [VENV]      (default .venv; ./setup.sh --full-mmcv runs it after the set-up)
# 1. obtain the mmcv 2.1.0 wheel into a temporary folder (`pip wheel`: a prebuilt OpenMMLab wheel
#    for this torch/CUDA if one exists, else a source build: nvcc, ~30 min, may not compile);
# 2. only if that worked: back up the installed mmcv-lite, uninstall it, install the wheel and
#    check `import mmcv._ext`;
# 3. if step 2 fails, restore mmcv-lite from the backup. Any failure: the reason, exit 1.
# No preset needs a compiled mmcv op (the mmcv.ops shim covers mmpose's import); this is for
# MMPose models that do (e.g. EDPose's deformable attention).
# RSPOSE_MMCV_FIND_LINKS=URL-or-dir replaces the OpenMMLab wheel index that is derived from torch.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv}
PY="$VENV/bin/python"
MMCV=${RSPOSE_MMCV_VERSION:-2.1.0}
fail() { echo "full_mmcv.sh: $*" >&2; exit 1; }

[ -x "$PY" ] || fail "no venv at '$VENV' (run ./setup.sh first)"
PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" show -q mmcv-lite >/dev/null 2>&1 || fail "mmcv-lite is not installed in '$VENV'; nothing to replace"
PURELIB=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

if [ -n "${RSPOSE_MMCV_FIND_LINKS:-}" ]; then
  LINKS=$RSPOSE_MMCV_FIND_LINKS
else  # what `mim install` uses: prebuilt wheels per CUDA and torch version (none for torch 2.14)
  LINKS=$("$PY" -c 'import torch; v = torch.version.cuda; t = ".".join(torch.__version__.split("+")[0].split(".")[:2]); print("https://download.openmmlab.com/mmcv/dist/" + ("cu" + v.replace(".", "") if v else "cpu") + "/torch" + t + ".0/index.html")')
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rspose_mmcv.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "full_mmcv.sh: step 1: obtaining the mmcv $MMCV wheel (find-links $LINKS; a source build needs nvcc and takes ~30 min) ..."
if ! "${PIP[@]}" wheel --no-deps --no-build-isolation -w "$TMP/wheel" -f "$LINKS" "mmcv==$MMCV" >"$TMP/wheel.log" 2>&1; then
  tail -n 25 "$TMP/wheel.log" >&2
  fail "could not obtain or build an mmcv $MMCV wheel (pip wheel failed, last lines above); mmcv-lite stays installed, the venv is unchanged"
fi
WHEEL=$(ls "$TMP"/wheel/mmcv-"$MMCV"-*.whl 2>/dev/null | head -n 1 || true)
[ -n "$WHEEL" ] || fail "pip wheel succeeded but left no mmcv-$MMCV wheel in $TMP/wheel; mmcv-lite stays installed"

echo "full_mmcv.sh: step 2: replacing mmcv-lite by $(basename "$WHEEL") ..."
mkdir -p "$TMP/backup"
cp -a "$PURELIB/mmcv" "$PURELIB"/mmcv_lite-*.dist-info "$TMP/backup/"
restore() {
  "${PIP[@]}" uninstall -y -q mmcv >/dev/null 2>&1 || true  # may not have got installed
  rm -rf "$PURELIB/mmcv" "$PURELIB"/mmcv_lite-*.dist-info
  cp -a "$TMP/backup/." "$PURELIB/"
  "$PY" -c 'import mmcv' || echo "full_mmcv.sh: WARNING: mmcv-lite was restored but does not import" >&2
}
if "${PIP[@]}" uninstall -y -q mmcv-lite \
  && "${PIP[@]}" install -q --no-deps --no-index "$WHEEL" \
  && "$PY" -c 'import mmcv, mmcv._ext; assert mmcv.__version__ == "'"$MMCV"'", mmcv.__version__'; then
  echo "full_mmcv.sh: done: mmcv $MMCV with compiled ops installed (the mmcv.ops shim stays inert)"
else
  restore
  fail "installing $(basename "$WHEEL") or importing mmcv._ext failed (see above); mmcv-lite was restored"
fi
