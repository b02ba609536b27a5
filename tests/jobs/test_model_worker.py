"""ModelWorker loads the model once, on the device it is told (--device reaches Ray actors)."""
import polar.jobs.workers as workers
from polar.evaluation.run import EvalConfig, EvalWorker
from polar.jobs import ModelWorker, versions, worker_device
from polar.search import SearchRun
from polar.search._run import SearchWorker
from polar.testing import tiny_model, tiny_tokenizer


def test_worker_device_honours_the_flag_and_defaults_to_the_cpu():
    assert worker_device("cpu") == "cpu" and worker_device("cuda:1") == "cuda:1"
    assert worker_device(None) is None  # no Ray GPU assigned to this process


def test_search_and_eval_workers_load_on_the_device_they_are_told(monkeypatch):
    loads = []

    def fake_load(name, device=None):
        loads.append((name, device))
        return tiny_model(num_layers=2), tiny_tokenizer()

    monkeypatch.setattr(workers, "load_model", fake_load)
    SearchWorker(SearchRun(model="M", device="cpu"), prefix_cache_mb=0)
    EvalWorker(EvalConfig(model="E", device="cpu"), [])
    ModelWorker("N")
    assert loads == [("M", "cpu"), ("E", "cpu"), ("N", None)]


def test_one_versions_helper():
    assert set(versions()) == {"polar", "torch", "transformers"}
