"""Sampled evaluation records are the same however the run is cut: (a) one run, (b) a run killed
halfway and resumed, (c) --limit in two steps, (d) batch size 1 vs 64, (e) local vs Ray."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from polar import load_model
from polar.evaluation import BaseGreedy, BaseSampling, EvalConfig, RandomSingleEdits, run_eval
from polar.tasks import Problem
from polar.testing import save_tiny_model

D = 3
N = 8
TIMING = ("wall_s", "overhead_s")


def _problems():
    return [("s", Problem(id=f"p{i}", question=f"w{5 + i} w{20 + 3 * i}", answer="3", source="synthetic", level=1))
            for i in range(N)]


def _methods():
    return [BaseGreedy(D), BaseSampling(D, 0.7), BaseSampling(D, 1.5), RandomSingleEdits(D, seed=2)]


def _config(model_dir, **kw):
    return EvalConfig(model=str(model_dir), data=["s"], k=3, max_new_tokens=4, early_answer=False, seed=7, **kw)


def _records(out_dir):
    lines = [json.loads(x) for x in (out_dir / "records.jsonl").read_text().splitlines() if x.strip()]
    assert len(lines) == len({r["key"] for r in lines}), "duplicate records"
    return {r["key"]: {k: v for k, v in r.items() if k not in TIMING} for r in lines}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-eval")
    save_tiny_model(folder, num_layers=D, seed=5)
    model, tok = load_model(str(folder))
    return folder, model, tok


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """(a): one run, every problem in one chunk."""
    folder, model, tok = tiny
    out = tmp_path_factory.mktemp("a")
    run_eval(_config(folder, chunk_problems=N), _methods(), model, tok, out, problems=_problems())
    recs = _records(out)
    samples = [c["output"] for r in recs.values() for c in r["methods"]["base_sample_t1.5"]]
    assert len(set(samples)) > 1  # the samples really differ from each other
    return recs


def test_batch_size_and_chunking_do_not_change_records(tiny, reference, tmp_path):
    folder, model, tok = tiny
    run_eval(_config(folder, batch_size=1, chunk_problems=3), _methods(), model, tok, tmp_path / "d1",
             problems=_problems())
    run_eval(_config(folder, batch_size=64, chunk_problems=1), _methods(), model, tok, tmp_path / "d64",
             problems=_problems())
    assert _records(tmp_path / "d1") == reference
    assert _records(tmp_path / "d64") == reference


def test_limit_in_two_steps_equals_one_run(tiny, reference, tmp_path):
    folder, model, tok = tiny
    run_eval(_config(folder, limit=3), _methods(), model, tok, tmp_path, problems=_problems()[:3])
    assert len(_records(tmp_path)) == 3
    run_eval(_config(folder), _methods(), model, tok, tmp_path, problems=_problems())
    assert _records(tmp_path) == reference


SCRIPT = """
import sys, time
import polar.evaluation.run as run_module
from polar import load_model
sys.path.insert(0, {here!r})
import test_sampling_identity as t
real = run_module._run_chunk
def slow(*a, **k):
    time.sleep(0.4)
    return real(*a, **k)
run_module._run_chunk = slow
model, tok = load_model({folder!r})
run_module.run_eval(t._config({folder!r}, chunk_problems=1), t._methods(), model, tok, {out!r}, problems=t._problems())
"""


def test_a_run_killed_halfway_and_resumed_equals_one_run(tiny, reference, tmp_path):
    folder, model, tok = tiny
    out = tmp_path / "b"
    code = SCRIPT.format(here=os.path.dirname(__file__), folder=str(folder), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    path = out / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(_records(out))
    assert 3 <= done < N, done
    run_eval(_config(folder, chunk_problems=N), _methods(), model, tok, out, problems=_problems())
    assert _records(out) == reference


def test_a_ray_run_equals_a_local_run(tiny, reference, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'polar[ray]')")
    from polar.jobs import RayOptions

    folder, model, tok = tiny
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_eval(_config(folder), _methods(), model, tok, tmp_path, problems=_problems(),
                 ray=RayOptions(workers=2, batch_units=3), threads=1)
    finally:
        ray.shutdown()
    assert _records(tmp_path) == reference
