"""The online routers as ``polar eval`` methods: DR.LLM's decided programs run as program rows
(the same records as the programs given directly), MindSkip / FlexiDepth rows through
``generate(..., router=R)`` (the same texts as a direct routed call; all gates open: base greedy),
reproducible samples, executed layers from the routed call, the CLI's checks before the model
loads, and ``polar eval --routers`` end to end on tiny checkpoints."""
import json

import pytest
import torch

import polar
from polar import cli
from polar.evaluation import (BaseGreedy, EvalConfig, GatedRouter, RouterPrograms, StaticPrograms, build_methods,
                              row_seed, run_eval)
from polar.evaluation.methods import Candidate, Method
from polar.evaluation.report import summarize
from polar.programs import Program, full
from polar.routers import (DrLLMConfig, DrLLMRouter, FlexiDepthConfig, FlexiDepthRouter, MindSkipConfig,
                           MindSkipRouter, save_router)
from polar.runtime import ReplayRouter
from polar.runtime.adapters import get_adapter
from polar.tasks import Problem, answer_rule, build_prompt, generation_setting
from polar.testing import save_tiny_model, tiny_model, tiny_tokenizer

torch.set_num_threads(1)

D = 6
TIMING = ("wall_s", "overhead_s")
MAX_NEW = 6


def _problems():
    """Questions of 2..6 words (prompts of different lengths), plus a twin of the first question."""
    out = [("s", Problem(id=f"p{i}", question=" ".join(f"w{5 + i + 3 * j}" for j in range(2 + i)), answer="3",
                         source="synthetic", level=1)) for i in range(5)]
    out.append(("s", Problem(id="twin", question=out[0][1].question, answer="4", source="synthetic", level=1)))
    return out


def _records(out_dir):
    lines = [json.loads(x) for x in (out_dir / "records.jsonl").read_text().splitlines() if x.strip()]
    assert len(lines) == len({r["key"] for r in lines}), "duplicate records"
    return {r["key"]: {k: v for k, v in r.items() if k not in TIMING} for r in lines}


def _config(**kw):
    base = dict(model="tiny", data=["s"], k=3, max_new_tokens=MAX_NEW, chunk_problems=4, batch_size=4)
    return EvalConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", num_layers=D, seed=3), tiny_tokenizer()


def _prompt_len(tok, problem):
    return len(tok(build_prompt(problem, "fewshot", tok))["input_ids"])


class LengthRouter:
    """Per row from its real prompt length: even -> skip layer 2, odd -> repeat layer 4."""

    def decide(self, layer, hidden, attention_mask):
        odd = attention_mask.sum(-1) % 2 == 1                                   # [B]
        if layer == 2:
            return torch.where(odd, 1, 0).long()
        if layer == 4:
            return torch.where(odd, 2, 1).long()
        return torch.ones(hidden.shape[0], dtype=torch.long)


def _length_program(n):
    return Program([0, 1, 2, 3, 4, 4, 5]) if n % 2 else Program([0, 1, 3, 4, 5])


class Given(Method):
    """The reference: given programs per problem, greedy then T=0.7 samples (DR.LLM's candidates)."""

    def __init__(self, name, program_of):
        self.name, self.program_of = name, program_of

    def candidates(self, problems, k):
        return [[Candidate(self.program_of(p), 0.0)] + [Candidate(self.program_of(p), 0.7)] * (k - 1)
                for p in problems]


# ------------------------------------------------------------------------------------- DR.LLM


def test_drllm_records_equal_the_decided_programs_run_as_programs(tiny, tmp_path):
    model, tok = tiny
    problems = _problems()
    lengths = {p.id: _prompt_len(tok, p) for _, p in problems}
    assert len({n % 2 for n in lengths.values()}) == 2  # both kinds of programs occur
    routed = RouterPrograms(LengthRouter(), model, tok, name="drllm", batch_size=3)
    run_eval(_config(early_answer=False), [routed, BaseGreedy(D)], model, tok, tmp_path / "routed", problems=problems)
    ref = Given("drllm", lambda p: _length_program(lengths[p.id]))
    run_eval(_config(early_answer=False), [ref, BaseGreedy(D)], model, tok, tmp_path / "given", problems=problems)
    got = _records(tmp_path / "routed")
    assert got == _records(tmp_path / "given")
    for _, p in problems:
        cands = got[f"s::{p.id}"]["methods"]["drllm"]
        assert [c["temperature"] for c in cands] == [0.0, 0.7, 0.7]
        assert all(c["program"] == list(_length_program(lengths[p.id])) for c in cands)
        assert all("fallback" not in c and "executed_layers" not in c for c in cands)
    assert routed.overhead_s > 0
    # a broadcast ReplayRouter, k=1: the records of StaticPrograms with that program
    prog = Program([0, 0, 1, 3, 5])
    run_eval(_config(k=1), [RouterPrograms(ReplayRouter(prog), model, tok)], model, tok, tmp_path / "replay",
             problems=problems)
    run_eval(_config(k=1), [StaticPrograms("drllm", [prog])], model, tok, tmp_path / "static", problems=problems)
    assert _records(tmp_path / "replay") == _records(tmp_path / "static")


class SkipAll:
    def decide(self, layer, hidden, attention_mask):
        return torch.zeros(hidden.shape[0], dtype=torch.long)


def test_an_empty_decided_program_falls_back_to_the_full_program(tiny, tmp_path):
    model, tok = tiny
    method = RouterPrograms(SkipAll(), model, tok)
    recs = run_eval(_config(k=2), [method, BaseGreedy(D)], model, tok, tmp_path, problems=_problems())
    assert method.fallbacks == len(recs)
    for rec in recs:
        cands = rec["methods"]["drllm"]
        assert all(c["program"] == list(range(D)) and c["fallback"] is True for c in cands)
        assert cands[0]["output"] == rec["methods"]["base_greedy"][0]["output"]
    assert summarize(recs, 2)["all"]["drllm"]["fallback"] == 1.0


# ------------------------------------------------------------------------------ gated routers


def _mindskip(model, layers=(), threshold=0.5):
    """Gate vectors zero: sigmoid(0) = 0.5, open at threshold 0.5, closed above it."""
    adapter = get_adapter(model)
    config = MindSkipConfig(D, int(model.config.hidden_size), layers=layers, threshold=threshold,
                            norm_eps=model.config.rms_norm_eps)
    router = MindSkipRouter.for_model(adapter, config, seed=0)
    with torch.no_grad():
        router.gate.zero_()
    return router


def _flexidepth(model, init_gate_logit=0.0, seed=1):
    adapter = get_adapter(model)
    c = model.config
    config = FlexiDepthConfig(D, c.hidden_size, c.intermediate_size, init_gate_logit=init_gate_logit,
                              norm_eps=c.rms_norm_eps)
    router = FlexiDepthRouter.for_model(adapter, config, seed=seed)
    with torch.no_grad():  # a non-zero adapter and mixed per-token gates
        for m in router.layer_routers:
            m.adapter_out.weight.normal_(0, 0.05)
            m.up.weight.normal_(0, 2.0)
    return router


def _direct(model, tok, problems, router, method, k, early, seed=0):
    """Each candidate's output from direct ``generate(..., router=)`` calls with the run's setting."""
    setting = generation_setting("fewshot")
    prompts = [build_prompt(p, "fewshot", tok) for p in problems]
    rules = [answer_rule("fewshot", p) for p in problems]
    stop_fn = (lambda i, text: rules[i](text)) if early else None
    greedy = polar.generate(model, tok, prompts, None, MAX_NEW, stop_strings=list(setting.stop_strings),
                            stop_fn=stop_fn, router=router)
    out = {p.id: [(greedy.texts[i], greedy)] for i, p in enumerate(problems)}
    for rank in range(1, k):
        seeds = [row_seed(seed, p.id, method, rank) for p in problems]
        sampled = polar.generate(model, tok, prompts, None, MAX_NEW, stop_strings=list(setting.stop_strings),
                                 stop_fn=stop_fn, router=router, do_sample=True, temperature=0.7, seed=seeds)
        for i, p in enumerate(problems):
            out[p.id].append((sampled.texts[i], sampled))
    return out


@pytest.mark.parametrize("early", [True, False])
def test_gated_rows_equal_direct_routed_generation(tiny, tmp_path, early):
    model, tok = tiny
    problems = _problems()
    plain = [p for _, p in problems]
    closed = _mindskip(model, layers=(2,), threshold=0.9)  # layer 2's attention off for every row
    flexi = _flexidepth(model)
    methods = [GatedRouter(closed, D, "mindskip"), GatedRouter(flexi, D, "flexidepth"), BaseGreedy(D)]
    recs = {r["id"]: r for r in run_eval(_config(early_answer=early), methods, model, tok, tmp_path,
                                         problems=problems)}
    for name, router in (("mindskip", closed), ("flexidepth", flexi)):
        want = _direct(model, tok, plain, router, name, 3, early)
        for i, p in enumerate(plain):
            cands = recs[p.id]["methods"][name]
            assert [c["output"] for c in cands] == [t for t, _ in want[p.id]], (name, p.id)
            assert all(c["program"] == list(range(D)) for c in cands)
            for c, (_, res) in zip(cands, want[p.id]):
                if name == "mindskip":
                    assert c["executed_layers"] == D and c["attention_open"] == pytest.approx((D - 1) / D, abs=1e-4)
                else:  # the executed layers are the routed call's mean layers per token
                    assert "attention_open" not in c
                    assert c["executed_layers"] == pytest.approx(res.token_layers[i], abs=1e-4)
    layers = [c["executed_layers"] for r in recs.values() for c in r["methods"]["flexidepth"]]
    assert min(layers) < D and len(set(layers)) > 1  # tokens really skip, differently per row
    if not early:  # rows run several tokens: the samples' texts (and generated tokens' layers) differ
        outputs = [c["output"] for r in recs.values() for c in r["methods"]["flexidepth"]]
        assert max(len(o.split()) for o in outputs) > 1 and len(set(outputs)) > len(recs)
    summary = summarize(list(recs.values()), 3)["all"]
    mean = sum(sum(c["executed_layers"] for c in r["methods"]["flexidepth"]) / 3 for r in recs.values()) / len(recs)
    assert summary["flexidepth"]["layers"] == pytest.approx(mean)
    assert summary["mindskip"]["attention_open"] == pytest.approx((D - 1) / D, abs=1e-4)
    assert summary["base_greedy"]["layers"] == D and "attention_open" not in summary["base_greedy"]
    # the closed gate changes some output (else this test would not tell the router was used)
    assert any(recs[p.id]["methods"]["mindskip"][0]["output"] != recs[p.id]["methods"]["base_greedy"][0]["output"]
               for p in plain)


def test_gates_all_open_give_base_greedy(tiny, tmp_path):
    model, tok = tiny
    methods = [GatedRouter(_mindskip(model), D, "mindskip"), GatedRouter(_flexidepth(model, 50.0, seed=2), D,
                                                                          "flexidepth"), BaseGreedy(D)]
    with torch.no_grad():
        for m in methods[1].router.layer_routers:
            m.up.weight.zero_()  # g = sigmoid(50) = 1: every token runs every layer, unscaled
    recs = run_eval(_config(early_answer=False), methods, model, tok, tmp_path, problems=_problems())
    assert max(len(r["methods"]["base_greedy"][0]["output"].split()) for r in recs) > 1
    for rec in recs:
        base = rec["methods"]["base_greedy"][0]["output"]
        assert rec["methods"]["mindskip"][0]["output"] == base
        assert rec["methods"]["flexidepth"][0]["output"] == base
        assert rec["methods"]["mindskip"][0]["attention_open"] == 1.0
        assert rec["methods"]["flexidepth"][0]["executed_layers"] == D


def test_router_rows_are_reproducible_and_resume(tiny, tmp_path):
    model, tok = tiny
    problems = _problems()

    def methods():
        return [GatedRouter(_flexidepth(model), D, "flexidepth"), RouterPrograms(LengthRouter(), model, tok),
                GatedRouter(_mindskip(model, layers=(1,), threshold=0.9), D, "mindskip")]

    def run(out, **kw):
        run_eval(_config(early_answer=False, **kw), methods(), model, tok, tmp_path / out,
                 problems=problems[: kw.get("limit") or len(problems)])
        return _records(tmp_path / out)

    ref = run("a", chunk_problems=len(problems), batch_size=64)
    samples = [c["output"] for r in ref.values() for c in r["methods"]["flexidepth"][1:]]
    assert len(set(samples)) > 1
    assert run("b", chunk_problems=1, batch_size=1) == ref
    assert run("legacy", legacy_rows=True) == ref
    run("c", limit=2)
    assert run("c") == ref  # resumed: the first two problems kept, the rest run
    assert run("d", seed=1) != ref


def test_build_methods_checks_the_routers(tiny):
    model, tok = tiny
    with pytest.raises(polar.UserError, match="'mindskip' needs a mindskip router"):
        build_methods(["base_greedy", "mindskip"], model, tok, k=2)
    with pytest.raises(polar.UserError, match="got a mindskip router"):
        build_methods(["flexidepth"], model, tok, k=2, routers={"flexidepth": _mindskip(model)})
    got = build_methods(["drllm", "mindskip"], model, tok, k=2,
                        routers={"drllm": ReplayRouter(full(D)), "mindskip": _mindskip(model)})
    assert [type(m) for m in got] == [RouterPrograms, GatedRouter]
    assert all("T=0.7 samples under the router's decisions" in m.definition for m in got)


def test_a_ray_run_equals_a_local_run(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'polar[ray]')")
    from polar.jobs import RayOptions

    folder = tmp_path / "tiny"
    save_tiny_model(folder, num_layers=D, seed=3)
    model, tok = polar.load_model(str(folder))

    def methods():
        return [RouterPrograms(LengthRouter(), model, tok), GatedRouter(_flexidepth(model), D, "flexidepth")]

    config = _config(model=str(folder))
    run_eval(config, methods(), model, tok, tmp_path / "local", problems=_problems())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_eval(config, methods(), model, tok, tmp_path / "ray", problems=_problems(),
                 ray=RayOptions(workers=2, batch_units=3), threads=1)
    finally:
        ray.shutdown()
    assert _records(tmp_path / "ray") == _records(tmp_path / "local")


# ----------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A saved tiny model and a router checkpoint of each kind for it (plus one for another depth)."""
    root = tmp_path_factory.mktemp("routers")
    save_tiny_model(root / "tiny", num_layers=D, seed=3)
    model, _ = polar.load_model(str(root / "tiny"))
    adapter, c = get_adapter(model), model.config
    torch.manual_seed(0)
    save_router(DrLLMRouter(DrLLMConfig(D, c.hidden_size, bottleneck=8)), root / "drllm")
    save_router(DrLLMRouter(DrLLMConfig(D, c.hidden_size, bottleneck=8)), root / "drllm2")
    save_router(MindSkipRouter.for_model(adapter, MindSkipConfig(D, c.hidden_size, norm_eps=c.rms_norm_eps)),
                root / "mindskip")
    save_router(_flexidepth(model), root / "flexidepth")
    save_router(DrLLMRouter(DrLLMConfig(D - 2, c.hidden_size, bottleneck=8)), root / "shallow")
    return root


def _eval_argv(root, out, methods, routers, *extra):
    return (["eval", "--model", str(root / "tiny"), "--data", "synthetic:1:2", "--methods", *methods,
             "--k", "2", "--max-new-tokens", "3", "--threads", "1", "--out", str(out)]
            + (["--routers", *[str(root / r) for r in routers]] if routers else []) + list(extra))


def test_cli_router_errors_are_one_line_and_come_before_the_model_loads(checkpoints, tmp_path, capsys, monkeypatch):
    root = checkpoints

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_model", no_model)
    cases = [(["base_greedy", "mindskip"], [], "'mindskip' needs a mindskip router checkpoint among --routers"),
             (["drllm"], ["mindskip"], "'drllm' needs a drllm router checkpoint among --routers (given: mindskip"),
             (["drllm"], ["drllm", "drllm2"], "both drllm routers"),
             (["drllm"], ["nothing"], "not a router checkpoint")]
    for methods, routers, message in cases:
        assert cli.main(_eval_argv(root, tmp_path / "e", methods, routers)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    monkeypatch.undo()
    assert cli.main(_eval_argv(root, tmp_path / "e", ["drllm"], ["shallow"])) == 2  # another depth: load_router's
    err = capsys.readouterr().err.strip().splitlines()
    assert "4 layers" in err[-1] and not (tmp_path / "e" / "records.jsonl").exists()


def test_cli_eval_with_router_checkpoints_end_to_end(checkpoints, tmp_path, capsys):
    root, out = checkpoints, tmp_path / "eval"
    argv = _eval_argv(root, out, ["base_greedy", "drllm", "mindskip", "flexidepth"], ["drllm", "mindskip", "flexidepth"])
    assert cli.main(argv) == 0
    lines = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    rec = lines[0]
    assert set(rec["methods"]) == {"base_greedy", "drllm", "mindskip", "flexidepth"}
    assert rec["routers"] == [str(root / r) for r in ("drllm", "mindskip", "flexidepth")]
    assert [c["temperature"] for c in rec["methods"]["flexidepth"]] == [0.0, 0.7]
    assert "attention_open" in rec["methods"]["mindskip"][0] and "executed_layers" in rec["methods"]["flexidepth"][0]
    summary = json.loads((out / "summary.json").read_text())
    assert "attention_open" in summary["all"]["mindskip"] and set(summary["_definitions"]) >= {"drllm", "mindskip",
                                                                                              "flexidepth"}
    report = (out / "report.md").read_text()
    assert "| mindskip | attention_open |" in report and "under the router's decisions" in report
    assert cli.main(argv) == 0  # resumes: nothing new
    assert len((out / "records.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    other = _eval_argv(root, out, ["base_greedy", "drllm", "mindskip", "flexidepth"],
                       ["drllm2", "mindskip", "flexidepth"])
    assert cli.main(other) == 2  # another router checkpoint: refused like other settings
    assert "routers=" in capsys.readouterr().err
    # without --methods: the default methods plus the routers' kinds
    assert cli.main(["eval", "--model", str(root / "tiny"), "--data", "synthetic:1:1", "--routers", str(root / "mindskip"),
                     "--out", str(tmp_path / "default")]) == 2
    assert "'polar' needs --checkpoint" in capsys.readouterr().err  # the default list includes polar, as before
