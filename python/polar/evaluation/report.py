"""Summaries, markdown tables and plots of an evaluation run's records.

Groups: synthetic levels (``L1`` ..), else the problem's source (``gsm8k``, ``mawps`` ..). Per
group and method: pass@1..k, maj@k, mean executed / unique layers per candidate, wall-clock and
predictor overhead per problem. ``base_sample_best`` picks, per group, the sampling temperature
with the best pass@k (the paper reports each temperature and the best).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..jobs import is_failed, report_failed  # noqa: E402
from ..tasks import Problem  # noqa: E402
from .metrics import maj_at, pass_at  # noqa: E402


def group_of(record: dict) -> str:
    return f"L{record['level']}" if record.get("source") == "synthetic" and record.get("level") else record["source"]


def summarize(records: list[dict], k: int) -> dict:
    """``{group: {method: metrics}}`` (see module docstring); methods with no candidate for a
    problem (the oracle on unsearched problems) count over the problems where they have some.
    Failed units' records are left out (named in one warning line)."""
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
                m["layers"] += sum(c["layers"] for c in cands) / len(cands)
                m["unique_layers"] += sum(c["unique_layers"] for c in cands) / len(cands)
                m["wall_s"] += rec.get("wall_s", 0.0)
                m["overhead_s"] += rec.get("overhead_s", {}).get(name, 0.0)
    out: dict = {}
    for g, methods in acc.items():
        out[g] = {}
        for name, m in methods.items():
            n = m["n"]
            out[g][name] = {"n": int(n), "problems": int(m["problems"]),
                            **{key: (v / n if n else None) for key, v in m.items() if key not in ("n", "problems")}}
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
    """Paper table 2 layout: rows = method x (p@1..p@k, maj@k, layers), columns = groups."""
    groups = _order(summary)
    methods = []
    for g in groups:
        methods += [m for m in summary[g] if m not in methods]
    lines = ["| method | metric | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
    for m in methods:
        for metric in [f"pass@{j}" for j in range(1, k + 1)] + [f"maj@{k}", "layers"]:
            cells = []
            for g in groups:
                v = summary[g].get(m, {}).get(metric)
                cells.append("-" if v is None else (f"{v:.1f}" if metric == "layers" else f"{100 * v:.1f}"))
            lines.append(f"| {m} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(records: list[dict], k: int, out_dir: str | Path, title: str = "Evaluation") -> dict:
    """Write ``summary.json``, ``report.md``, ``pass_at_k.png``, ``accuracy_vs_layers.png``; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records, k)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown_table(summary, k)
    (out / "report.md").write_text(f"# {title}\n\nAccuracy in %, `layers` = mean executed layers per candidate.\n\n"
                                   f"{table}\n")
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
