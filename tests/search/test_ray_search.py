"""`polar search --ray` and `polar eval --ray` on a local Ray cluster: same records as a local run."""
import json

import pytest

from polar import cli
from polar.testing import save_tiny_model

pytest.importorskip("ray", reason="ray is not installed (pip install 'polar[ray]')")

SKIP = ("wall_s", "versions", "batch_size", "shard")


def _records(path):
    return {r["id"]: {k: v for k, v in r.items() if k not in SKIP}
            for r in map(json.loads, path.read_text().splitlines())}


def test_search_and_eval_on_ray_equal_local_runs(tmp_path):
    import ray

    model_dir = tmp_path / "tiny"
    save_tiny_model(model_dir, num_layers=6)
    base = ["search", "--model", str(model_dir), "--data", "synthetic:1:6:train", "--space", "skip+loop",
            "--sims", "6", "--max-new-tokens", "4", "--threads", "1"]
    assert cli.main(base + ["--out", str(tmp_path / "local.jsonl")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert cli.main(base + ["--out", str(tmp_path / "ray.jsonl"), "--ray", "--workers", "2",
                                "--units-per-task", "2"]) == 0
        ev = ["eval", "--model", str(model_dir), "--data", "synthetic:2:4", "--methods", "base_greedy",
              "random_single_edit", "--k", "2", "--max-new-tokens", "3", "--threads", "1"]
        assert cli.main(ev + ["--out", str(tmp_path / "eval_ray"), "--ray", "--workers", "2",
                              "--units-per-task", "1"]) == 0
    finally:
        ray.shutdown()
    local, remote = _records(tmp_path / "local.jsonl"), _records(tmp_path / "ray.jsonl")
    assert len(local) == 6 and local == remote
    assert cli.main(ev + ["--out", str(tmp_path / "eval_local")]) == 0

    def outputs(folder):
        return {r["id"]: {m: [(c["program"], c["output"]) for c in cs] for m, cs in r["methods"].items()}
                for r in map(json.loads, (folder / "records.jsonl").read_text().splitlines())}
    assert outputs(tmp_path / "eval_ray") == outputs(tmp_path / "eval_local")
