"""ResultsFile: append + fsync per record, resume, settings refused, torn lines survived."""
import json

import pytest

from polar.jobs import ResultsFile, SettingsMismatchError, read_jsonl
from polar.tasks import parse_spec


def test_append_resume_and_settings(tmp_path):
    path = tmp_path / "r.jsonl"
    f = ResultsFile(path, {"model": "m", "seed": 1})
    assert f.load() == {}
    f.append([{"id": "a", "x": 1}, {"id": "b", "x": 2}])
    again = ResultsFile(path, {"model": "m", "seed": 1})
    assert set(again.load()) == {"a", "b"} and again.records["a"]["model"] == "m"
    with pytest.raises(SettingsMismatchError, match="seed=1"):
        ResultsFile(path, {"model": "m", "seed": 2}).load()


def test_torn_last_line_is_ignored_and_the_next_append_starts_a_new_line(tmp_path):
    path = tmp_path / "r.jsonl"
    f = ResultsFile(path)
    f.append([{"id": "a"}])
    with open(path, "a") as fh:
        fh.write('{"id": "b", "x"')  # a write killed midway
    g = ResultsFile(path)
    assert set(g.load()) == {"a"}
    g.append([{"id": "b"}])
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    assert all(json.loads(line) for line in path.read_text().splitlines()[::2])


@pytest.mark.parametrize("spec, expected", [
    ("synthetic:2:10", dict(level=2, n=10, split="test", seed=0)),
    ("synthetic:3:5:train:7", dict(level=3, n=5, split="train", seed=7)),
    ("gsm8k:/x/test.jsonl", dict(path="/x/test.jsonl", format="gsm8k")),
    ("/x/test.jsonl", dict(path="/x/test.jsonl", format=None)),
])
def test_parse_spec(spec, expected):
    ds = parse_spec(spec)
    assert {k: getattr(ds, k) for k in expected} == expected


@pytest.mark.parametrize("spec", ["", "synthetic:1", "synthetic:a:3", "synthetic:1:2:test:x:9"])
def test_bad_specs_raise_one_line(spec):
    with pytest.raises(ValueError) as err:
        parse_spec(spec)
    assert "\n" not in str(err.value)
