"""PolarLM (polar as an lm-evaluation-harness model) against lm-eval's own Hugging Face backend.

With ``program=full`` PolarLM must give what ``lm_eval.models.huggingface.HFLM`` gives on the same
model object: log-likelihoods within 1e-4 (fp32), the same ``is_greedy`` flags, the same greedy
generations and task metrics. With other programs the log-likelihoods equal
:func:`polar.reference_forward`. Skipped where lm-eval is not installed (``polar[lm-eval]``).
"""
import math
import random

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'polar[lm-eval]')")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

import polar  # noqa: E402
from polar.evaluation.lm_eval_backend import PolarLM  # noqa: E402
from polar.evaluation.lm_eval_tasks import export_lm_eval, task_manager  # noqa: E402
from polar.testing import tiny_model, tiny_tokenizer  # noqa: E402

D = 6
MAX_LENGTH = 40  # small, so that long requests are truncated from the left


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request):
    return tiny_model(request.param, seed=3, num_layers=D), tiny_tokenizer()


def _words(rng, n):
    return " ".join(f"w{rng.randrange(3, 128)}" for _ in range(n))


def ll_requests(seed=0):
    """Contexts of many lengths; shared contexts with several continuations (multiple choice), one-token
    continuations, an empty context and requests longer than MAX_LENGTH."""
    rng = random.Random(seed)
    reqs = []
    for i in range(6):
        ctx = _words(rng, rng.randint(1, 12))
        for _ in range(3):
            reqs.append((ctx, " " + _words(rng, rng.choice([1, 1, 3]))))
    reqs.append(("", "w5 w6 w7"))
    reqs.append(("", "<s> w9"))
    reqs.append((_words(rng, 50), " " + _words(rng, 4)))
    reqs.append((_words(rng, 8) + " ", _words(rng, 2)))  # trailing space moves to the continuation
    return [Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)]


def _hflm(model, tok, batch_size=4, max_length=MAX_LENGTH):
    return HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=max_length)


def _polar(model, tok, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("max_length", MAX_LENGTH)
    return PolarLM(pretrained=model, tokenizer=tok, **kw)


def test_full_program_loglikelihoods_match_hflm(tiny):
    model, tok = tiny
    reqs = ll_requests()
    ours = _polar(model, tok).loglikelihood(reqs, disable_tqdm=True)
    theirs = _hflm(model, tok).loglikelihood(reqs, disable_tqdm=True)
    assert len(ours) == len(theirs) == len(reqs)
    for (a, ga), (b, gb) in zip(ours, theirs):
        assert abs(a - b) <= 1e-4
        assert ga == gb
    # a greedy continuation is flagged greedy by both
    greedy_ids = [int(polar.reference_forward(model, polar.full(D), torch.tensor([9, 10, 11]))[-1].argmax())]
    req = [Instance("loglikelihood", {}, ("w9 w10 w11", " " + tok.decode(greedy_ids)), 0)]
    assert _polar(model, tok).loglikelihood(req, disable_tqdm=True)[0][1] is True
    assert _hflm(model, tok).loglikelihood(req, disable_tqdm=True)[0][1] is True


def test_rolling_loglikelihood_matches_hflm(tiny):
    model, tok = tiny
    rng = random.Random(5)
    reqs = [Instance("loglikelihood_rolling", {}, (_words(rng, n),), i) for i, n in enumerate([3, 17, 39, 40, 95])]
    ours = _polar(model, tok).loglikelihood_rolling(reqs, disable_tqdm=True)
    theirs = _hflm(model, tok).loglikelihood_rolling(reqs, disable_tqdm=True)
    assert ours == pytest.approx(theirs, abs=1e-4)


def _gen_requests(contexts, gen_kwargs):
    return [Instance("generate_until", {}, (c, dict(g)), i) for i, (c, g) in enumerate(zip(contexts, gen_kwargs))]


def test_greedy_generation_matches_hflm(tiny):
    model, tok = tiny
    rng = random.Random(7)
    contexts = [_words(rng, rng.randint(1, 20)) for _ in range(7)] + [_words(rng, 60)]  # the last is truncated
    free = _gen_requests(contexts, [{"until": [], "max_gen_toks": 10, "do_sample": False}] * len(contexts))
    ours_free = _polar(model, tok).generate_until(free, disable_tqdm=True)
    assert ours_free == _hflm(model, tok).generate_until(free, disable_tqdm=True)
    # stop strings the model really produces: a word it emits third, and its fifth as a second group
    kwargs = []
    for i, text in enumerate(ours_free):
        words = text.split()
        stop = words[2] if i % 2 == 0 and len(words) > 2 else (words[4] if len(words) > 4 else "w999")
        kwargs.append({"until": [stop], "max_gen_toks": 10 if i % 3 else 6, "do_sample": False})
    stopped = _gen_requests(contexts, kwargs)
    ours = _polar(model, tok, batch_size=3).generate_until(stopped, disable_tqdm=True)
    assert ours == _hflm(model, tok, batch_size=3).generate_until(stopped, disable_tqdm=True)
    assert any(len(a) < len(b) for a, b in zip(ours, ours_free))  # some stop strings were hit


def _reference_loglikelihoods(model, tok, reqs, programs):
    """log p(continuation | context) under each request's program, one unpadded sequence at a time."""
    lm = _polar(model, tok)
    out = []
    for r, prog in zip(reqs, programs):
        ctx, cont = lm._encode(*r.args)
        inp = (ctx + cont)[-(MAX_LENGTH + 1):][:-1]
        logp = torch.log_softmax(polar.reference_forward(model, prog, torch.tensor(inp)).float(), -1)
        pos = torch.arange(len(inp) - len(cont), len(inp))
        out.append(float(logp[pos, torch.tensor(cont)].sum()))
    return out


def test_non_full_program_equals_reference_forward(tiny):
    model, tok = tiny
    reqs = ll_requests(1)
    text = "0-2 2 3 5"   # loop layer 2, skip layer 4: the string form of model_args
    ours = _polar(model, tok, program=text).loglikelihood(reqs, disable_tqdm=True)
    expected = _reference_loglikelihoods(model, tok, reqs, [[0, 1, 2, 2, 3, 5]] * len(reqs))
    assert [a for a, _ in ours] == pytest.approx(expected, abs=1e-4)
    # the Python list form and the compact form name programs too
    listed = PolarLM.create_from_arg_obj({"pretrained": model, "tokenizer": tok, "program": [0, 1, 2, 2, 3, 5],
                                          "max_length": MAX_LENGTH})
    assert [a for a, _ in listed.loglikelihood(reqs, disable_tqdm=True)] == pytest.approx(expected, abs=1e-5)
    compact = _polar(model, tok, program="0-1:keep 2-3:repeat 4:skip 5:keep")
    assert list(compact.program) == [0, 1, 2, 3, 2, 3, 5]


def test_router_requests_equal_their_replayed_programs(tiny):
    """router=: each request runs what the router decides; a router that replays one program gives
    what program= gives (log-likelihoods, greedy flags, generations, program statistics)."""
    model, tok = tiny
    reqs = ll_requests(2)
    prog = [0, 1, 2, 2, 3, 5]
    routed = _polar(model, tok, router=polar.ReplayRouter(polar.Program(prog)))
    fixed = _polar(model, tok, program=prog)
    a, b = routed.loglikelihood(reqs, disable_tqdm=True), fixed.loglikelihood(reqs, disable_tqdm=True)
    assert [x for x, _ in a] == pytest.approx([x for x, _ in b], abs=1e-5) and [g for _, g in a] == [g for _, g in b]
    assert routed.stats.as_dict() == fixed.stats.as_dict()
    assert routed.get_model_info()["router"] == "ReplayRouter"
    rng = random.Random(3)
    contexts = [_words(rng, rng.randint(2, 12)) for _ in range(5)]
    gen = _gen_requests(contexts, [{"until": [], "max_gen_toks": 6, "do_sample": False}] * len(contexts))
    assert routed.generate_until(gen, disable_tqdm=True) == fixed.generate_until(gen, disable_tqdm=True)


class StubPredictor:
    """A predictor whose top-1 program is a fixed function of the question (tests only)."""

    num_layers = D
    PROGRAMS = [[0, 1, 2, 3, 4, 5], [0, 1, 1, 2, 3, 4, 5], [0, 2, 3, 5], [0, 1, 2, 3, 3, 4, 4, 5]]

    def predict(self, questions, k=1):
        from types import SimpleNamespace

        return [[SimpleNamespace(program=self.PROGRAMS[sum(map(ord, q)) % len(self.PROGRAMS)])] for q in questions]


def test_predictor_programs_per_request_in_one_batch(tiny):
    model, tok = tiny
    rng = random.Random(2)
    reqs = []
    for i in range(10):
        q = _words(rng, rng.randint(2, 8))
        reqs.append(Instance("loglikelihood", {"question": q}, (q, " " + _words(rng, 2)), i))
    lm = _polar(model, tok, predictor=StubPredictor(), batch_size=8)
    ours = lm.loglikelihood(reqs, disable_tqdm=True)
    programs = [StubPredictor().predict([r.doc["question"]])[0][0].program for r in reqs]
    assert len({tuple(p) for p in programs}) > 1  # really different programs in one batch
    assert [a for a, _ in ours] == pytest.approx(_reference_loglikelihoods(model, tok, reqs, programs), abs=1e-4)
    assert lm.stats.requests == len(reqs)
    with pytest.raises(ValueError, match="predictor_input=context"):
        lm.loglikelihood([Instance("loglikelihood", {}, ("w3", " w4"), 0)], disable_tqdm=True)


def test_results_do_not_depend_on_batch_size_or_order(tiny):
    model, tok = tiny
    reqs = ll_requests(3)
    base = _polar(model, tok, program="0-3 3 4-5", batch_size=1).loglikelihood(reqs, disable_tqdm=True)
    perm = list(range(len(reqs)))
    random.Random(0).shuffle(perm)
    for bs in (3, 64):
        got = _polar(model, tok, program="0-3 3 4-5", batch_size=bs).loglikelihood([reqs[i] for i in perm],
                                                                                  disable_tqdm=True)
        for j, i in enumerate(perm):
            assert got[j][0] == pytest.approx(base[i][0], abs=1e-5)
            assert got[j][1] == base[i][1]
    rng = random.Random(4)
    contexts = [_words(rng, rng.randint(1, 15)) for _ in range(6)]
    gens = _gen_requests(contexts, [{"until": ["w7"], "max_gen_toks": 8}] * 6)
    one = _polar(model, tok, batch_size=1).generate_until(gens, disable_tqdm=True)
    assert _polar(model, tok, batch_size=4).generate_until(gens[::-1], disable_tqdm=True) == one[::-1]


def test_sampling_is_seeded_per_request(tiny):
    model, tok = tiny
    rng = random.Random(6)
    contexts = [_words(rng, rng.randint(2, 10)) for _ in range(4)]
    kw = {"until": [], "max_gen_toks": 12, "do_sample": True, "temperature": 1.0, "top_k": 50}
    reqs = _gen_requests(contexts + contexts[:1], [kw] * 5)  # the last repeats the first (lm-eval's repeats)
    a = _polar(model, tok, batch_size=2).generate_until(reqs, disable_tqdm=True)
    b = _polar(model, tok, batch_size=5).generate_until(reqs[::-1], disable_tqdm=True)[::-1]
    assert sorted(a) == sorted(b) and a[1:4] == b[1:4]  # same samples whatever the batching
    assert a[0] != a[4]  # repeats of one request draw different samples
    c = _polar(model, tok, batch_size=2, seed=99).generate_until(reqs, disable_tqdm=True)
    assert c != a
    d = _gen_requests(contexts, [{**kw, "seed": 5}] * 4)
    assert _polar(model, tok).generate_until(d, disable_tqdm=True) == _polar(model, tok).generate_until(
        d, disable_tqdm=True)


def test_bad_arguments_are_refused(tiny):
    model, tok = tiny
    with pytest.raises(polar.UserError, match="router checkpoint|no config"):
        _polar(model, tok, router="no/such/ckpt")
    with pytest.raises(ValueError, match="one of"):
        _polar(model, tok, program="full", predictor=StubPredictor())
    with pytest.raises(ValueError, match="one of"):
        _polar(model, tok, program="full", router=polar.ReplayRouter(polar.full(D)))
    with pytest.raises(ValueError, match="outside"):
        _polar(model, tok, program="0-9")
    with pytest.raises(ValueError, match="num_beams"):
        _polar(model, tok).generate_until(_gen_requests(["w3"], [{"until": [], "num_beams": 2}]), disable_tqdm=True)


def test_registered_as_polar():
    from lm_eval.api.registry import get_model

    assert get_model("polar") is PolarLM
    assert get_model("hf") is HFLM  # registering polar does not hide lm-eval's own models


def test_shipped_tasks_end_to_end_match_hflm(tmp_path):
    import lm_eval

    model, tok = tiny_model("llama", seed=3, num_layers=D), tiny_tokenizer()
    export_lm_eval(tmp_path)
    tasks = ["polar_level2", "polar_level2_choice", "polar_words_ppl"]
    kw = dict(tasks=tasks, limit=3, task_manager=task_manager(tmp_path), log_samples=True,
              bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    ours = lm_eval.simple_evaluate(model=_polar(model, tok, batch_size=8, max_length=512), **kw)
    theirs = lm_eval.simple_evaluate(model=_hflm(model, tok, batch_size=8, max_length=512), **kw)
    for task in tasks:
        a, b = ours["results"][task], theirs["results"][task]
        for metric, value in a.items():
            if isinstance(value, float) and not math.isnan(value):
                assert value == pytest.approx(b[metric], rel=1e-4), (task, metric)
    gen_a = [s["resps"] for s in ours["samples"]["polar_level2"]]
    assert gen_a == [s["resps"] for s in theirs["samples"]["polar_level2"]]
    assert len(gen_a) == 3 and "exact_match,none" in ours["results"]["polar_level2"]


@pytest.mark.slow
def test_default_model_matches_hflm(tmp_path):
    import lm_eval

    from polar import models

    if not models.is_default_cached():
        pytest.skip(f"converted default model not cached in {models.default_model_dir()} (run polar.load_default())")
    model, tok = models.load_default()
    export_lm_eval(tmp_path)
    kw = dict(tasks=["polar_level2_choice", "polar_level2"], limit=6, task_manager=task_manager(tmp_path),
              log_samples=True, bootstrap_iters=0)
    ours = lm_eval.simple_evaluate(model=PolarLM(pretrained=model, tokenizer=tok, batch_size=8), **kw)
    theirs = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=8), **kw)
    for task in ("polar_level2_choice", "polar_level2"):
        sa, sb = ours["samples"][task], theirs["samples"][task]
        for x, y in zip(sa, sb):
            if task == "polar_level2":
                assert x["resps"] == y["resps"]
            else:
                for (lp_a, g_a), (lp_b, g_b) in zip([r[0] for r in x["resps"]], [r[0] for r in y["resps"]]):
                    assert abs(float(lp_a) - float(lp_b)) <= 1e-4 and g_a == g_b
        assert ours["results"][task] == theirs["results"][task] or all(
            ours["results"][task][m] == pytest.approx(theirs["results"][task][m], abs=1e-6)
            for m in ours["results"][task] if isinstance(ours["results"][task][m], float))


def test_cli_exports_and_runs_a_task(tmp_path, capsys):
    import json

    from polar import cli
    from polar.testing import save_tiny_model

    save_tiny_model(tmp_path / "model", num_layers=D)
    assert cli.main(["data", "--export-lm-eval", str(tmp_path / "data")]) == 0
    assert "level1.jsonl: 36 records" in capsys.readouterr().out
    assert cli.main(["lm-eval", "--model", str(tmp_path / "model"), "--tasks", "polar_level1",
                     "--program", "0-2 2 3-5", "--limit", "2", "--data-dir", str(tmp_path / "data"),
                     "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "polar_summary.json").read_text())
    assert summary["model"]["program"] == [0, 1, 2, 2, 3, 4, 5] and summary["programs"]["requests"] == 2
    assert list((tmp_path / "out").glob("*/results_*.json")) and list((tmp_path / "out").glob("*/samples_polar_level1_*"))
    assert cli.main(["lm-eval", "--tasks", "polar_gsm8k", "--data-dir", str(tmp_path / "data"),
                     "--out", str(tmp_path / "o2")]) == 2  # its data was not exported: one line, no model loaded
    assert "--gsm8k PATH" in capsys.readouterr().err


def test_lazy_registration_for_lm_evals_command_line():
    from lm_eval.api.registry import get_model

    from polar.evaluation.lm_eval_run import register_polar

    assert register_polar() is PolarLM is get_model("polar")
