"""bench/gpu_check.py: refuses to run without CUDA (except --cpu-smoke), and its smoke mode writes
the report (a few cheap sections; the whole smoke run is ``bench/gpu_check.sh --cpu-smoke``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import polar_kernels as pk

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    env.pop("OUT", None)
    return env


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_fails_clearly(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=_env(), cwd=ROOT)
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "--cpu-smoke" in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not pk.HAS_TRITON, reason="triton is not importable")
def test_cpu_smoke_writes_the_report(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(tmp_path),
                           "--sections", "env,ceilings,kernel_bench"], capture_output=True, text=True, timeout=600,
                          env=_env(TRITON_INTERPRET="1"), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((tmp_path / "cpu-smoke.json").read_text())
    assert set(rep["sections"]) == {"env", "ceilings", "kernel_bench"} and not rep["errors"]
    rows = rep["sections"]["kernel_bench"]["rows"]
    assert {r["impl"] for r in rows} >= {"pool_triton_cascade", "pool_triton_no_cascade", "slot_triton (unshared copy)"}
    assert all(r.get("rel_err", 0.0) < 1e-5 for r in rows)
    md = (tmp_path / "cpu-smoke.md").read_text()
    assert md.startswith("# GPU check: cpu-smoke") and "copy-bandwidth bound" in md
