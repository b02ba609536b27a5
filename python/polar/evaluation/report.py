"""Summaries, markdown tables and plots of an evaluation run's records.

Groups: synthetic levels (``L1`` ..), else the problem's source (``gsm8k``, ``mawps`` ..). Per
group and method: pass@1..k, maj@k, mean executed / unique layers per candidate (a candidate's
``executed_layers`` where recorded, FlexiDepth's mean layers per token; else its program length),
wall-clock and predictor overhead per problem; for router methods also ``attention_open`` (the
share of attention sub-layers run, MindSkip) and ``fallback`` (the share of candidates run as the
full program because the router's program was empty, DR.LLM), where some candidate has them. ``base_sample_best`` picks, per group, the sampling temperature
with the best pass@k (the paper reports each temperature and the best).

``answer@k`` (the PoLar method, ``polar``): the deployable accuracy of :func:`polar.solve`'s rule
applied to the recorded candidates (their answers and first-answer-token log-probabilities), the
rule and threshold those of the checkpoint's ``selection.json`` (``top1`` when there is none);
``answer_layers``: the mean layers the rule executes per question (``top1`` the top candidate;
``vote`` all ``k``; ``gate`` the full program, plus the ``k - 1`` best other candidates only where
it falls back). The gate takes the full program's run from the method's own candidates, else from
another method's greedy full-program candidate of the same problem (greedy runs are deterministic);
where there is none, answer@k is not counted for that problem.
"""
from __future__ import annotations

import math

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..jobs import is_failed, report_failed  # noqa: E402
from ..tasks import Problem  # noqa: E402
from .metrics import maj_at, pass_at  # noqa: E402
from .solve import _vote_pick, gate_pick  # noqa: E402

#: Methods whose ``answer@k`` the report gives (the deployable answer of :func:`polar.solve`).
ANSWER_METHODS: tuple[str, ...] = ("polar",)
DEFAULT_SELECTION = {"rule": "top1", "threshold": None}


def group_of(record: dict) -> str:
    return f"L{record['level']}" if record.get("source") == "synthetic" and record.get("level") else record["source"]


def _full_program(rec: dict, num_layers: int | None) -> tuple | None:
    if num_layers is not None:
        return tuple(range(num_layers))
    for c in rec["methods"].get("base_greedy", []):
        return tuple(c["program"])
    return None


def answer_at_k(rec: dict, method: str, k: int, selection: dict, num_layers: int | None = None
                ) -> tuple[bool, int] | None:
    """``(correct, executed layers)`` of :func:`polar.solve`'s rule ``selection`` (``{"rule",
    "threshold"}``) on ``method``'s first ``k`` recorded candidates of one record; ``None`` when it
    cannot be computed (no candidates; the gate without a full-program run)."""
    cands = rec["methods"].get(method) or []
    cands = cands[:k]
    if not cands:
        return None
    rule = selection.get("rule", "top1")
    if rule == "top1":
        return bool(cands[0]["correct"]), int(cands[0]["layers"])
    if rule == "vote":
        v = _vote_pick([c["answer"] for c in cands], [c["score"] for c in cands])
        return (v is not None and bool(cands[v]["correct"])), int(sum(c["layers"] for c in cands))
    if rule != "gate":
        raise ValueError(f"unknown rule {rule!r}")
    base = _full_program(rec, num_layers)
    if base is None:
        return None
    full = next((c for c in cands if tuple(c["program"]) == base and not c.get("temperature")), None)
    if full is None:
        full = next((c for cs in rec["methods"].values() for c in cs
                     if tuple(c["program"]) == base and not c.get("temperature")), None)
    if full is None:
        return None
    others = [c for c in cands if tuple(c["program"]) != base][: k - 1]
    threshold = selection.get("threshold")
    threshold = -math.inf if threshold is None else float(threshold)
    pick, fell_back = gate_pick(full.get("logprob_first"), full["answer"],
                                [(c["answer"], c["score"]) for c in others], threshold)
    correct = pick is not None and bool((full if pick == 0 else others[pick - 1])["correct"])
    layers = int(full["layers"]) + (sum(int(c["layers"]) for c in others) if fell_back else 0)
    return correct, layers


def summarize(records: list[dict], k: int, selection: dict | None = None, num_layers: int | None = None,
              answer_methods: tuple[str, ...] = ANSWER_METHODS) -> dict:
    """``{group: {method: metrics}}`` (see module docstring); methods with no candidate for a
    problem (the oracle on unsearched problems) count over the problems where they have some.
    ``selection``: the rule of ``answer@k`` (default ``top1``); ``num_layers``: the model's depth
    (the gate's full program; default: read from the base_greedy candidates).
    Failed units' records are left out (named in one warning line)."""
    selection = dict(selection or DEFAULT_SELECTION)
    acc: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    failed = [str(r.get("key", r.get("id"))) for r in records if is_failed(r)]
    report_failed(failed, "evaluation records", "left out of the report; a rerun retries them")
    for rec in records:
        if is_failed(rec):
            continue
        problem = Problem(id=rec["id"], question=rec["question"], answer=rec["gold"], source=rec["source"],
                          level=rec.get("level"))
        for g in (group_of(rec), "all"):
            for name, cands in rec["methods"].items():
                m = acc[g][name]
                m["problems"] += 1
                if not cands:
                    continue
                m["n"] += 1
                correct = [c["correct"] for c in cands]
                for j in range(1, k + 1):
                    m[f"pass@{j}"] += pass_at(correct, j)
                m[f"maj@{k}"] += maj_at([c["answer"] for c in cands], [c["score"] for c in cands], k, problem)
                m["layers"] += sum(c.get("executed_layers", c["layers"]) for c in cands) / len(cands)
                if any("attention_open" in c for c in cands):
                    m["attention_open"] += sum(c.get("attention_open", 1.0) for c in cands) / len(cands)
                if any(c.get("fallback") for c in cands):
                    m["fallback"] += sum(bool(c.get("fallback")) for c in cands) / len(cands)
                m["unique_layers"] += sum(c["unique_layers"] for c in cands) / len(cands)
                m["wall_s"] += rec.get("wall_s", 0.0)
                m["overhead_s"] += rec.get("overhead_s", {}).get(name, 0.0)
                if name in answer_methods:
                    got = answer_at_k(rec, name, k, selection, num_layers)
                    if got is not None:
                        m["answer_n"] += 1
                        m["answer_correct"] += got[0]
                        m["answer_layers_sum"] += got[1]
    out: dict = {}
    for g, methods in acc.items():
        out[g] = {}
        for name, m in methods.items():
            n = m["n"]
            answer_keys = ("answer_n", "answer_correct", "answer_layers_sum")
            out[g][name] = {"n": int(n), "problems": int(m["problems"]),
                            **{key: (v / n if n else None) for key, v in m.items()
                               if key not in ("n", "problems") + answer_keys}}
            if name in answer_methods:
                an = m["answer_n"]
                out[g][name][f"answer@{k}"] = m["answer_correct"] / an if an else None
                out[g][name]["answer_layers"] = m["answer_layers_sum"] / an if an else None
                out[g][name]["answer_n"] = int(an)
                out[g][name]["answer_rule"] = selection.get("rule")
        samples = {n: v for n, v in out[g].items() if n.startswith("base_sample_t") and v["n"]}
        if samples:
            best = max(samples, key=lambda n: (samples[n][f"pass@{k}"], samples[n]["pass@1"]))
            out[g]["base_sample_best"] = {**samples[best], "temperature": best.removeprefix("base_sample_t")}
    return out


def _order(groups) -> list[str]:
    levels = sorted(g for g in groups if g.startswith("L") and g[1:].isdigit())
    others = sorted(g for g in groups if g not in levels and g != "all")
    return levels + others + (["all"] if "all" in groups else [])


def markdown_table(summary: dict, k: int) -> str:
    """Paper table 2 layout: rows = method x (p@1..p@k, maj@k, layers), columns = groups; router
    methods add ``attention_open`` (in %) where recorded."""
    groups = _order(summary)
    methods = []
    for g in groups:
        methods += [m for m in summary[g] if m not in methods]
    lines = ["| method | metric | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
    for m in methods:
        extra = [f"answer@{k}", "answer_layers"] if any(f"answer@{k}" in summary[g].get(m, {}) for g in groups) else []
        extra += ["attention_open"] if any("attention_open" in summary[g].get(m, {}) for g in groups) else []
        for metric in [f"pass@{j}" for j in range(1, k + 1)] + [f"maj@{k}", "layers"] + extra:
            cells = []
            for g in groups:
                v = summary[g].get(m, {}).get(metric)
                cells.append("-" if v is None else (f"{v:.1f}" if metric.endswith("layers") else f"{100 * v:.1f}"))
            lines.append(f"| {m} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(records: list[dict], k: int, out_dir: str | Path, title: str = "Evaluation",
                 selection: dict | None = None, definitions: dict | None = None,
                 num_layers: int | None = None) -> dict:
    """Write ``summary.json``, ``report.md``, ``pass_at_k.png``, ``accuracy_vs_layers.png``; return the summary.

    ``selection``: the rule of ``answer@k`` (the checkpoint's ``selection.json``; default top1);
    ``definitions``: ``{method: how it is defined}`` (e.g. which best_static), written into the
    report and ``summary.json["_definitions"]``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records, k, selection, num_layers)
    meta = {"_selection": dict(selection or DEFAULT_SELECTION), "_definitions": dict(definitions or {})}
    (out / "summary.json").write_text(json.dumps({**summary, **meta}, indent=2) + "\n")
    table = markdown_table(summary, k)
    sel = meta["_selection"]
    notes = [f"- `{name}`: {text}" for name, text in (definitions or {}).items()]
    notes.append(f"- `answer@{k}` (polar): the deployable answer of polar.solve's rule `{sel.get('rule')}`"
                 + (f" (threshold {sel.get('threshold')})" if sel.get("rule") == "gate" else "")
                 + (f" from {sel['source']}" if sel.get("source") else "")
                 + "; `answer_layers`: mean layers the rule executes per question")
    (out / "report.md").write_text(f"# {title}\n\nAccuracy in %, `layers` = mean executed layers per candidate.\n\n"
                                   + "\n".join(notes) + f"\n\n{table}\n")
    _plot_pass_at_k(summary, k, out / "pass_at_k.png")
    _plot_accuracy_vs_layers(summary, out / "accuracy_vs_layers.png")
    return summary


def _plot_pass_at_k(summary: dict, k: int, path: Path) -> None:
    groups = [g for g in _order(summary) if g != "all"] or ["all"]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for name, m in summary[g].items():
            if m.get("pass@1") is None or name == "base_sample_best":
                continue
            ax.plot(range(1, k + 1), [100 * m[f"pass@{j}"] for j in range(1, k + 1)], marker="o", label=name)
        ax.set_title(g)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_accuracy_vs_layers(summary: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, m in summary.get("all", {}).items():
        if m.get("pass@1") is None or name == "base_sample_best":
            continue
        ax.scatter(m["layers"], 100 * m["pass@1"], label=name)
    ax.set_xlabel("mean executed layers per candidate")
    ax.set_ylabel("pass@1 (%)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
