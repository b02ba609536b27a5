"""Shared fixtures for the throughput benchmarks (run: ``pytest bench/ --benchmark-only``).

- One thread (``torch.set_num_threads(1)``): these machines have 2 shared cores, and a second
  busy core makes two-thread timings slow and noisy (docs/architecture.md section 17).
- Models, built once per session: ``smollm2`` (SmolLM2-135M-Instruct: the real converted weights
  when ``polar.models`` has them cached, else a random-weight LlamaConfig with the same shapes;
  timing does not depend on weight values; ``POLAR_BENCH_RANDOM_WEIGHTS=1`` forces the stand-in)
  and ``tiny`` (``polar.testing.tiny_model``, Llama, 30 layers of width 64).
- ``POLAR_BENCH_LARGE=1`` adds the slow cases (SmolLM2 prefill/decode at B=128, about +5 min).
- Also collects ``bench_*.py`` files, so ``pytest bench/`` runs every suite in the folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))


from common import Models  # noqa: E402


def pytest_collect_file(file_path: Path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def models() -> Models:
    return Models()
