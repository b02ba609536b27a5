#!/usr/bin/env bash
# bench/gpu_check.sh: the one-call GPU check of every execution path (docs/architecture.md section 17).
#
#   bench/gpu_check.sh               on a CUDA machine: ~6-8 min on one H200; fails (exit 2) without CUDA
#   bench/gpu_check.sh --cpu-smoke   dry run on CPU at tiny sizes (Triton interpreter), a few minutes
#   extra arguments go to bench/gpu_check.py (--out DIR, --budget-s S, --sections a,b,...)
#
# What it checks and measures: see bench/gpu_check.py's docstring (kernels vs references on the
# device, CUDA vs CPU results for hf/fused x shared/unshared, the prefix cache and online routers,
# prefill/decode row-layer throughput vs the fixed-depth HF forward and HF generate, FLOP/s vs a
# measured torch.mm peak, kernel time vs a copy of the same bytes). Results: bench/gpu_results/
# <device>.md and .json (quoted by bench/RESULTS.md), copied to $OUT when set.
#
# Setup, done here because the device machine starts bare and reaches no package registry (the
# device tool's README: "nothing outside it can be reached"; its image has torch, triton,
# transformers, numpy, pytest, ninja and a compiler; pip cannot reach PyPI there):
#   1. PYTHONPATH=python:. instead of `pip install -e .` (pip would try to resolve the torch pin).
#   2. polar._C (the C++ scheduler) is built in place with the machine's torch
#      (`python3 setup.py build_ext --inplace`, ~1 min) unless it already imports.
#   3. math_verify (imported by polar.tasks, not in the image): installed from .whl/*.whl when that
#      folder was carried (`pip download --no-deps -d .whl math-verify latex2sympy2_extended
#      antlr4-python3-runtime` on a machine with PyPI, then run with carry [".whl"]); else a stub
#      module is put on the path (answer grading is not used by this check).
# Device tool call (one call, everything inside): command `bench/gpu_check.sh`, timeout_s 600.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
SMOKE=0
for a in "$@"; do [ "$a" = "--cpu-smoke" ] && SMOKE=1; done
T0=$(date +%s)
export PYTHONPATH="$ROOT/python:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check: '$PY' cannot import torch (set PYTHON=...)" >&2; exit 2
fi
if [ "$SMOKE" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: CUDA is not available here; this check needs a GPU (bench/gpu_check.sh --cpu-smoke for a CPU dry run)" >&2
  exit 2
fi
if [ "$SMOKE" = 0 ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
fi

# math_verify: wheels if carried, else a stub (polar.tasks imports it; this check grades nothing)
if ! "$PY" -c "import math_verify" 2>/dev/null; then
  SITE=${TMPDIR:-/tmp}/polar_gpu_check_site
  mkdir -p "$SITE"
  if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1 && "$PY" -m pip install -q --no-index --no-deps --no-compile \
       --target "$SITE" "$ROOT"/.whl/*.whl; then
    echo "gpu_check: math_verify installed from .whl/"
  else
    mkdir -p "$SITE/math_verify"
    cat > "$SITE/math_verify/__init__.py" <<'EOF'
"""Stub written by bench/gpu_check.sh: the real math_verify is not installed on this machine."""
def parse(*args, **kwargs):
    raise RuntimeError("math_verify is a stub here (bench/gpu_check.sh); answer grading is unavailable")
verify = parse
EOF
    echo "gpu_check: math_verify not installed; using a stub (answer grading is not part of this check)"
  fi
  export PYTHONPATH="$SITE:$PYTHONPATH"
fi

# polar._C for this python and torch
if ! "$PY" -c "import polar._C" 2>/dev/null; then
  echo "gpu_check: building polar._C in place ..."
  if ! MAX_JOBS=${MAX_JOBS:-8} "$PY" setup.py -q build_ext --inplace > "${TMPDIR:-/tmp}/polar_gpu_check_build.log" 2>&1; then
    tail -40 "${TMPDIR:-/tmp}/polar_gpu_check_build.log" >&2
    echo "gpu_check: building polar._C failed (needs a C++ compiler, ninja and Python headers)" >&2
    exit 2
  fi
  "$PY" -c "import polar._C" || { echo "gpu_check: polar._C built but does not import" >&2; exit 2; }
fi
echo "gpu_check: setup took $(( $(date +%s) - T0 )) s"

if [ "$SMOKE" = 1 ]; then
  # the device side runs the Triton kernels under the interpreter, which must be on before triton is imported
  export TRITON_INTERPRET=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  exec "$PY" bench/gpu_check.py --out "${TMPDIR:-/tmp}/polar_gpu_check_smoke" "$@"
fi
# 8 minutes in all, setup included: the driver starts no section after --budget-s (430 s minus the
# setup) and is killed at 470 s minus the setup (what it wrote so far stays in bench/gpu_results/
# and $OUT); a --budget-s given on the command line wins.
SETUP=$(( $(date +%s) - T0 ))
timeout $(( 470 - SETUP )) "$PY" bench/gpu_check.py --budget-s $(( 430 - SETUP )) "$@"
rc=$?
echo "gpu_check: exit $rc after $(( $(date +%s) - T0 )) s"
exit $rc
