"""Local and Ray runs of units with one writer: same records, actor kills, driver kills, poison units."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from polar.jobs import ResultsFile, read_jsonl, read_records
from polar.tasks import Problem
from polar.jobs import RayOptions, run_local, run_ray
from polar.testing import EchoWorker, echo_worker_factory

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'polar[ray]')")


def _units(n):
    return [Problem(id=f"u{i}", question="q", answer="0", source="t") for i in range(n)]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _by_id(path):
    recs = read_jsonl(path)
    assert len(recs) == len({r["id"] for r in recs}), "duplicate records"
    return {r["id"]: r for r in recs}


def test_ray_run_equals_a_local_run(tmp_path, cluster):
    units = _units(10)
    run_local(units, EchoWorker(), ResultsFile(tmp_path / "local.jsonl"))
    counts = run_ray(units, echo_worker_factory(), ResultsFile(tmp_path / "ray.jsonl"), RayOptions(workers=2, batch_units=3))
    assert counts["done"] == 10 and counts["failed"] == 0
    assert _by_id(tmp_path / "ray.jsonl") == _by_id(tmp_path / "local.jsonl")


def test_a_killed_actor_is_restarted_and_every_unit_finishes_once(tmp_path, cluster):
    marker = str(tmp_path / "killed-once")
    units = _units(12)
    factory = echo_worker_factory(delay=0.05, kill=("u5",), marker=marker)
    counts = run_ray(units, factory, ResultsFile(tmp_path / "r.jsonl"), RayOptions(workers=2, batch_units=2))
    assert os.path.exists(marker)  # an actor process really died (SIGKILL) mid-run
    assert counts["retried"] >= 1 and counts["failed"] == 0
    got = _by_id(tmp_path / "r.jsonl")
    assert set(got) == {u.id for u in units} and not any(r.get("failed") for r in got.values())


def test_a_unit_that_always_fails_is_marked_and_the_rest_finish(tmp_path, cluster):
    units = _units(8)
    counts = run_ray(units, echo_worker_factory(poison=("u3",)), ResultsFile(tmp_path / "r.jsonl"),
                     RayOptions(workers=2, batch_units=4, max_attempts=2))
    got = _by_id(tmp_path / "r.jsonl")
    assert set(got) == {u.id for u in units} and counts["failed"] == 1
    assert got["u3"]["failed"] is True and "always fails" in got["u3"]["error"]
    assert all("value" in r for k, r in got.items() if k != "u3")
    # with --no-retry-failed a rerun skips everything already written, the failed unit included
    store = ResultsFile(tmp_path / "r.jsonl", retry_failed=False)
    store.load()
    assert run_ray(units, echo_worker_factory(), store, RayOptions(workers=1)) == {"done": 0, "failed": 0, "retried": 0}
    assert len(read_jsonl(tmp_path / "r.jsonl")) == 8
    # by default a rerun retries the failed unit; its new record replaces the failed one for readers
    store = ResultsFile(tmp_path / "r.jsonl")
    store.load()
    assert store.failed() == ["u3"] and not store.is_done("u3") and store.is_done("u2")
    assert run_ray(units, echo_worker_factory(), store, RayOptions(workers=1)) == {"done": 1, "failed": 0, "retried": 0}
    assert len(read_jsonl(tmp_path / "r.jsonl")) == 9
    got = read_records(tmp_path / "r.jsonl")
    assert sorted(r["id"] for r in got.records) == sorted(u.id for u in units) and got.failed == []
    assert "value" in next(r for r in got.records if r["id"] == "u3")


DRIVER = """
import sys
from polar.jobs import ResultsFile
from polar.tasks import Problem
from polar.jobs import RayOptions, run_ray
from polar.testing import echo_worker_factory
units = [Problem(id=f"u{i}", question="q", answer="0", source="t") for i in range(16)]
store = ResultsFile(sys.argv[1]); store.load()
run_ray(units, echo_worker_factory(delay=float(sys.argv[2])), store, RayOptions(workers=2, batch_units=1))
"""


def test_killing_the_driver_loses_nothing_and_the_rerun_adds_no_duplicates(tmp_path):
    path = tmp_path / "r.jsonl"
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(path), "0.5"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 3):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _by_id(path)
    assert 3 <= len(before) < 16
    subprocess.run([sys.executable, "-c", DRIVER, str(path), "0"], env=env, check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = _by_id(path)
    assert set(after) == {f"u{i}" for i in range(16)}
    assert all(after[k] == v for k, v in before.items())
    assert all(json.loads(line) for line in path.read_text().splitlines())
