"""The command line's error contract: a user error prints one line and exits 2; anything else is
a bug: one line naming it, exit 1; --debug re-raises it."""
import pytest

from polar import UserError, cli


@pytest.mark.parametrize("argv,words", [
    (["search", "--data", "synthetic:9:3", "--out", "x.jsonl"], "level"),
    (["merge", "--out", "m.jsonl", "missing.jsonl"], "not found"),
    (["ask", ""], "empty"),
    (["eval", "--data", "synthetic:1:2", "--out", "e", "--k", "0"], "--k"),
    (["search", "--data", "synthetic:1:2", "--out", "x.jsonl", "--shard", "3/2"], "shard"),
    (["search", "--data", "synthetic:1:2", "--out", "x.jsonl", "--prefix-cache-mb", "-1"], "prefix_cache_mb"),
])
def test_user_errors_exit_2_in_one_line(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"polar {argv[0]}: error:") and words in err[0], err


def test_an_internal_error_exits_1_in_one_line_and_debug_shows_it(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "merge_results", broken)
    assert cli.main(["merge", "--out", str(tmp_path / "m.jsonl"), "a.jsonl"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: KeyError" in err[0] and "run with --debug for the traceback" in err[0]
    with pytest.raises(KeyError):
        cli.main(["--debug", "merge", "--out", str(tmp_path / "m.jsonl"), "a.jsonl"])


def test_a_plain_value_error_inside_a_stage_is_a_bug_not_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "merge_results", lambda *a: (_ for _ in ()).throw(ValueError("internal invariant")))
    assert cli.main(["merge", "--out", str(tmp_path / "m.jsonl"), "a.jsonl"]) == 1
    monkeypatch.setattr(cli, "merge_results", lambda *a: (_ for _ in ()).throw(UserError("your file")))
    assert cli.main(["merge", "--out", str(tmp_path / "m.jsonl"), "a.jsonl"]) == 2
    assert issubclass(UserError, ValueError)
