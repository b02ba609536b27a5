"""The paper's findings from search results (``polar analyze``): markdown tables and PNG plots.

Per group (data source and level) and search space, over the problems of the results files:

- table 1: base accuracy (the full program), oracle accuracy (some valid program, the full one
  included) and the gain;
- finding 2 (figure 4): of the initially correct problems, the share with a shorter valid
  program (fewer than ``D`` steps); of the initially wrong ones, the share corrected by any
  valid program and by a shorter one;
- figure 3: best accuracy under execution budgets (a problem counts when it has a valid program
  of at most ``budget * D`` steps; 90..115% of ``D``);
- figure 6: accuracy of the evaluated programs against their total layer executions (program
  length), pooled over the group's problems;
- figure 7: over valid programs other than the full one, the lengths of skipped and repeated
  segments in the compact space (:func:`polar.programs.parse`; programs outside it are
  counted apart) and how many times a looped layer runs.

Example::

    summary = analyze(["results/search/l1_skip.jsonl", "results/search/l1_loop.jsonl"], "results/analysis")
    summary["groups"]["synthetic L1"]["skip"]["oracle"]
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure

from ..errors import UserError
from ..programs import NotInSpaceError, Op, parse
from ._files import read_results
from ._mcts import SPACES

#: Execution budgets of figure 3, as multiples of D.
DEFAULT_BUDGETS: tuple[float, ...] = (0.90, 0.95, 1.00, 1.05, 1.10, 1.15)


def group_name(record: dict) -> str:
    """``"synthetic L1"``: the record's source and level."""
    level = record.get("level")
    return f"{record.get('source', '?')}" + (f" L{level}" if level is not None else "")


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _stats(records: list[dict], budgets: Sequence[float]) -> dict:
    """The numbers of one (group, space) cell."""
    n = len(records)
    base = sum(r["initial_score"] >= 0.5 for r in records)
    oracle = sum(bool(r["final_valid_transitions"]) for r in records)
    correct = [r for r in records if r["initial_score"] >= 0.5]
    wrong = [r for r in records if r["initial_score"] < 0.5]

    def shorter(r: dict) -> bool:
        return any(len(p) < r["num_layers"] for p in r["final_valid_transitions"])

    by_length: dict[int, list[int]] = defaultdict(lambda: [0, 0])   # length -> [valid, evaluated]
    segments = {"skip": Counter(), "repeat": Counter()}
    runs: Counter = Counter()
    outside = valid_programs = 0
    for r in records:
        D = r["num_layers"]
        for p in r["final_valid_transitions"]:
            by_length[len(p)][0] += 1
            by_length[len(p)][1] += 1
            if list(p) == list(range(D)):
                continue
            valid_programs += 1
            runs.update(c for c in Counter(p).values() if c > 1)
            try:
                compact = parse(p, D)
            except NotInSpaceError:
                outside += 1
                continue
            for (first, last), op in zip(compact.segments(), compact.ops):
                if op == Op.SKIP:
                    segments["skip"][last - first + 1] += 1
                elif op == Op.REPEAT:
                    segments["repeat"][last - first + 1] += 1
        for p in r["final_invalid_transitions"]:
            by_length[len(p)][1] += 1
    return {
        "n": n, "base": _share(base, n), "oracle": _share(oracle, n),
        "gain": (oracle - base) / n if n else None,
        "initially_correct": len(correct),
        "correct_with_shorter": _share(sum(shorter(r) for r in correct), len(correct)),
        "initially_wrong": len(wrong),
        "wrong_corrected": _share(sum(bool(r["final_valid_transitions"]) for r in wrong), len(wrong)),
        "wrong_corrected_shorter": _share(sum(shorter(r) for r in wrong), len(wrong)),
        "budgets": {f"{b:.2f}": _share(sum(any(len(p) <= math.floor(b * r["num_layers"] + 1e-9)
                                               for p in r["final_valid_transitions"]) for r in records), n)
                    for b in budgets},
        "accuracy_by_length": {str(k): {"valid": v[0], "evaluated": v[1], "accuracy": v[0] / v[1]}
                               for k, v in sorted(by_length.items())},
        "mean_programs_evaluated": sum(r["programs_evaluated"] for r in records) / n if n else None,
        "valid_programs": valid_programs,
        "segment_lengths": {op: {str(k): c[k] for k in sorted(c)} for op, c in segments.items()},
        "runs_per_looped_layer": {str(k): runs[k] for k in sorted(runs)},
        "outside_compact_space": outside,
    }


def _space_order(space: str) -> int:
    return SPACES.index(space) if space in SPACES else len(SPACES)


def analyze(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
            budgets: Sequence[float] = DEFAULT_BUDGETS, common_only: bool = True) -> dict:
    """Compute the findings over the search results files ``paths`` and write
    ``out_dir/findings.md``, ``out_dir/findings.json`` and PNG plots; returns the summary
    ``{"groups": {group: {space: stats}}, "files": [...], "plots": [...]}``. With ``common_only``
    (default) each group keeps only the problems searched in every one of its spaces, so the spaces
    are compared on the same problems (the number left out is in ``summary["left_out"]``).

    Each file holds one run (one space); a problem may appear once per space. Raises
    ``ValueError`` for a non-search file, mixed settings within a file or a problem searched
    twice in one space, ``FileNotFoundError`` for a missing file."""
    cells: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for path in paths:
        for rec in read_results([path]):
            key = (group_name(rec), str(rec.get("space")))
            if rec["id"] in cells[key]:
                raise UserError(f"problem {rec['id']!r} appears twice in space {key[1]} ({path})")
            cells[key][rec["id"]] = rec
    left_out: dict[str, int] = {}
    if common_only:
        for group in {g for g, _ in cells}:
            keys = [k for k in cells if k[0] == group]
            common = set.intersection(*(set(cells[k]) for k in keys))
            left_out[group] = sum(len(cells[k]) - len(common) for k in keys)
            for k in keys:
                cells[k] = {pid: rec for pid, rec in cells[k].items() if pid in common}
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for (group, space), recs in sorted(cells.items(), key=lambda kv: (kv[0][0], _space_order(kv[0][1]))):
        if recs:
            groups[group][space] = _stats(list(recs.values()), budgets)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"files": [str(p) for p in paths], "budgets": list(budgets), "groups": dict(groups),
               "left_out": left_out}
    summary["plots"] = _plots(summary, out)
    (out / "findings.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "findings.md").write_text(format_findings(summary), encoding="utf-8")
    return summary


# ---------------------------------------------------------------------------------------------
# tables


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def format_findings(summary: dict) -> str:
    """The summary as markdown tables (accuracies in percent)."""
    groups = summary["groups"]
    cells = [(g, s, st) for g, spaces in groups.items() for s, st in spaces.items()]
    spaces = sorted({s for _, s, _ in cells}, key=_space_order)
    parts = ["# Search findings", "", "Files: " + ", ".join(f"`{f}`" for f in summary["files"]), ""]

    parts += ["## Table 1: base and oracle accuracy (%)", "",
              "Oracle: some valid program (the full one included); gain in points. Each group compares its "
              "spaces on the same problems (those searched in every space"
              + (f"; records left out: {sum(summary.get('left_out', {}).values())}" if summary.get("left_out") else "")
              + ").", ""]
    rows = []
    for g, per_space in groups.items():
        base = next(iter(per_space.values()))
        row = [g, str(base["n"]), _pct(base["base"])]
        for s in spaces:
            st = per_space.get(s)
            row.append("-" if st is None else f"{_pct(st['oracle'])} (+{_pct(st['gain'])})")
        rows.append(row)
    parts += [_table(["group", "n", "base"] + [f"{s} oracle (gain)" for s in spaces], rows), ""]

    parts += ["## Finding 2: shorter and corrected programs (%)", ""]
    rows = [[g, s, str(st["n"]), _pct(st["base"]), str(st["initially_correct"]), _pct(st["correct_with_shorter"]),
             str(st["initially_wrong"]), _pct(st["wrong_corrected"]), _pct(st["wrong_corrected_shorter"]),
             f"{st['mean_programs_evaluated']:.1f}" if st["mean_programs_evaluated"] is not None else "-"]
            for g, s, st in cells]
    parts += [_table(["group", "space", "n", "base", "correct", "with shorter valid", "wrong", "corrected",
                      "corrected by shorter", "programs / problem"], rows), ""]

    budgets = summary["budgets"]
    parts += ["## Best accuracy under execution budgets (% of problems; budget in % of D)", ""]
    rows = [[g, s] + [_pct(st["budgets"][f"{b:.2f}"]) for b in budgets] for g, s, st in cells]
    parts += [_table(["group", "space"] + [f"{100 * b:.0f}%" for b in budgets], rows), ""]

    parts += ["## Accuracy of evaluated programs by length (valid / evaluated)", ""]
    lengths = sorted({int(k) for _, _, st in cells for k in st["accuracy_by_length"]})
    rows = []
    for g, s, st in cells:
        acc = st["accuracy_by_length"]
        rows.append([g, s] + [f"{acc[str(k)]['valid']}/{acc[str(k)]['evaluated']}" if str(k) in acc else ""
                              for k in lengths])
    parts += [_table(["group", "space"] + [str(k) for k in lengths], rows), ""]

    parts += ["## Valid programs: segment lengths (compact space) and runs per looped layer", ""]
    rows = []
    for g, s, st in cells:
        seg = st["segment_lengths"]
        rows.append([g, s, str(st["valid_programs"]), str(st["outside_compact_space"]),
                     _counts(seg["skip"]), _counts(seg["repeat"]), _counts(st["runs_per_looped_layer"])])
    parts += [_table(["group", "space", "valid (non-full)", "outside compact space", "skip segments: length x count",
                      "repeat segments: length x count", "looped layer: runs x count"], rows), ""]
    parts += ["Plots: " + ", ".join(f"`{Path(p).name}`" for p in summary.get("plots", [])), ""]
    return "\n".join(parts)


def _counts(hist: dict[str, int]) -> str:
    return " ".join(f"{k}x{v}" for k, v in hist.items()) or "-"


# ---------------------------------------------------------------------------------------------
# plots


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return str(path)


def _plots(summary: dict, out: Path) -> list[str]:
    groups = summary["groups"]
    cells = [(g, s, st) for g, spaces in groups.items() for s, st in spaces.items()]
    spaces = sorted({s for _, s, _ in cells}, key=_space_order)
    if not cells:
        return []
    paths = []

    fig = Figure(figsize=(4.5 * len(spaces), 3.6))
    for i, space in enumerate(spaces):
        ax = fig.add_subplot(1, len(spaces), i + 1)
        for g, s, st in cells:
            if s == space:
                xs = [100 * b for b in summary["budgets"]]
                ax.plot(xs, [100 * (st["budgets"][f"{b:.2f}"] or 0) for b in summary["budgets"]], marker="o", label=g)
        ax.set(title=f"{space}: best accuracy under a budget", xlabel="budget (% of D)", ylabel="accuracy (%)",
               ylim=(0, 100))
        _legend(ax)
    paths.append(_save(fig, out / "budget_accuracy.png"))

    fig = Figure(figsize=(4.5 * len(spaces), 3.6))
    for i, space in enumerate(spaces):
        ax = fig.add_subplot(1, len(spaces), i + 1)
        for g, s, st in cells:
            if s == space and st["accuracy_by_length"]:
                acc = st["accuracy_by_length"]
                ax.plot([int(k) for k in acc], [100 * v["accuracy"] for v in acc.values()], marker=".", label=g)
        ax.set(title=f"{space}: program accuracy vs layer executions", xlabel="layer executions (program length)",
               ylabel="programs correct (%)")
        _legend(ax)
    paths.append(_save(fig, out / "accuracy_vs_layers.png"))

    fig = Figure(figsize=(13, 3.6))
    for i, (title, pick) in enumerate((("skipped segment length", lambda st: st["segment_lengths"]["skip"]),
                                       ("repeated segment length", lambda st: st["segment_lengths"]["repeat"]),
                                       ("runs of a looped layer", lambda st: st["runs_per_looped_layer"]))):
        ax = fig.add_subplot(1, 3, i + 1)
        totals: dict[str, Counter] = defaultdict(Counter)
        for _, s, st in cells:
            totals[s].update({int(k): v for k, v in pick(st).items()})
        keys = sorted({k for c in totals.values() for k in c})
        width = 0.8 / max(1, len(totals))
        for j, (s, c) in enumerate(sorted(totals.items(), key=lambda kv: _space_order(kv[0]))):
            ax.bar([k + j * width for k in keys], [c[k] for k in keys], width=width, label=s)
        ax.set(title=f"valid programs: {title}", xlabel=title, ylabel="count")
        if keys:
            ax.set_xticks([k + width * (len(totals) - 1) / 2 for k in keys], [str(k) for k in keys])
        _legend(ax)
    paths.append(_save(fig, out / "valid_program_histograms.png"))
    return paths
