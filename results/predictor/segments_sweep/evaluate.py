"""Evaluate the segment predictors of ``run.sh`` on the validation sweep matrices (issue 19 item 4).

    python results/predictor/segments_sweep/evaluate.py          # after run.sh; one CPU thread

For every trained variant (and three baselines: base greedy = the full program, the static set
cover of the pooled training matrix, the old shipped segment checkpoint, skip_loop_r5:
``python/polar/predictor/default_segments`` since the scorer became the default, before that
``python/polar/predictor/default``)
the top-5 programs of every validation question (the predictor's input is the question text) are
graded from the dense validation matrices ``results/sweep/programs/*_validation.jsonl.gz`` (read
in place, gzipped): a candidate is graded when it is a program entry of the sweep's library (the
full program, every single skip / repeat of 1-4 layers, 20 search programs), else it is
*ungraded*.

Columns: ``top-1 = full`` (the collapse measure), distinct top-1 programs, coverage (share of
top-1 / of all top-5 candidates that are library entries), top-1 accuracy and pass@5 as a lower
bound (ungraded candidates count as wrong) and among graded (top-1: over the questions whose
top-1 is graded; pass@5: over the questions with at least one graded candidate, ungraded ones
left out). Writes ``results.md`` and ``results.json`` beside this file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
FAMILIES = ("L1", "L2", "L3", "L4", "L5", "words")
VARIANTS = ("plain", "anti", "lenpref", "dropfull", "all", "nonorm", "lenpref_seed1", "all_seed1")
REMEDIES = {
    "plain": "no remedy",
    "anti": "anti-original penalty, lambda 0.5",
    "lenpref": "length preference, beta 0.05",
    "dropfull": "full program dropped when a shorter valid program exists",
    "all": "all three",
    "nonorm": "no per-problem normalisation (a problem weighs as many times as it has valid programs)",
}
K = 5
#: top-1 = full program on at least this share of the questions: still collapsed.
COLLAPSED = 0.95


def program_name(program, names: dict) -> str:
    """A library entry's name, else the program as ranges (``0-12 12-29``)."""
    p = tuple(int(i) for i in program)
    if p in names:
        return names[p]
    runs, start = [], 0
    for i in range(1, len(p) + 1):
        if i == len(p) or p[i] != p[i - 1] + 1:
            runs.append(f"{p[start]}-{p[i - 1]}" if i - 1 > start else f"{p[start]}")
            start = i
    return " ".join(runs)


def metrics(cands: list[list[tuple]], correct: np.ndarray, col_of: dict, full: tuple, rows=None) -> dict:
    """Metrics of candidate lists (best first, up to K programs) on matrix rows ``rows``."""
    rows = list(range(len(cands))) if rows is None else list(rows)
    n = len(rows)
    top1 = [cands[i][0] for i in rows]
    cols = [[col_of.get(tuple(p), -1) for p in cands[i][:K]] for i in rows]
    graded1 = np.array([c[0] >= 0 for c in cols])
    hit1 = np.array([c[0] >= 0 and bool(correct[i, c[0]]) for i, c in zip(rows, cols)])
    hits = [[j >= 0 and bool(correct[i, j]) for j in c] for i, c in zip(rows, cols)]
    pass_k = [float(np.mean([any(h[:k]) for h in hits])) for k in range(1, K + 1)]
    any_graded = np.array([any(j >= 0 for j in c) for c in cols])
    hit5 = np.array([any(h) for h in hits])
    n_cands = sum(len(c) for c in cols)
    fcol = col_of[full]
    away = [k for k, p in enumerate(top1) if tuple(p) != full]  # questions whose top-1 is not the full program
    return {
        "n": n,
        "top1_full": float(np.mean([tuple(p) == full for p in top1])),
        "full_in_top5": float(np.mean([any(tuple(p) == full for p in cands[i][:K]) for i in rows])),
        "distinct_top1": len(set(map(tuple, top1))),
        "distinct_top1_share": len(set(map(tuple, top1))) / n,
        "candidates_per_question": n_cands / n,
        "coverage_top1": float(graded1.mean()),
        "coverage_top5": sum(j >= 0 for c in cols for j in c) / n_cands,
        "top1_acc_lower": float(hit1.mean()),
        "top1_acc_graded": float(hit1[graded1].mean()) if graded1.any() else float("nan"),
        "pass5_lower": float(hit5.mean()),
        "pass5_graded": float(hit5[any_graded].mean()) if any_graded.any() else float("nan"),
        "pass_at_k_lower": pass_k,
        "mean_top1_length": float(np.mean([len(p) for p in top1])),
        # where top-1 departs from the full program: its accuracy (lower bound) vs the full program's there
        "departures": len(away),
        "departures_top1_acc": float(hit1[away].mean()) if away else float("nan"),
        "departures_full_acc": float(np.mean([correct[rows[k], fcol] for k in away])) if away else float("nan"),
    }


def hits(cands: list[list[tuple]], correct: np.ndarray, col_of: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per question: top-1 correct, one of the top-5 correct (ungraded candidates wrong), [P] each."""
    h = [[col_of.get(tuple(p), -1) >= 0 and bool(correct[i, col_of[tuple(p)]]) for p in c[:K]]
         for i, c in enumerate(cands)]
    return np.array([x[0] for x in h]), np.array([any(x) for x in h])


def evaluate(name: str, cands: list[list[tuple]], val, col_of, full, names, families, ref=None) -> dict:
    """Metrics on all rows and per family; with ``ref = (full top-1 hits, static top-5 hits)`` also the
    paired bootstrap 95% intervals of the top-1 lift over base greedy and the pass@5 lift over static."""
    from polar.evaluation.learnability import bootstrap_ci

    out = metrics(cands, val.correct, col_of, full)
    h1, h5 = hits(cands, val.correct, col_of)
    out["_hits"] = (h1, h5)
    if ref is not None:
        out["top1_lift_vs_full"] = list(bootstrap_ci(h1.astype(float) - ref[0], seed=0))
        out["pass5_lift_vs_static"] = list(bootstrap_ci(h5.astype(float) - ref[1], seed=0))
    out["families"] = {f: metrics(cands, val.correct, col_of, full, rows)
                       for f, rows in families.items()}
    if out["departures"]:  # the full program's accuracy on the departures' families, weighted like them
        fcol = col_of[full]
        out["departures_families_full_acc"] = sum(
            fm["departures"] * float(val.correct[families[f], fcol].mean()) for f, fm in out["families"].items()
        ) / out["departures"]
    counts = Counter(tuple(c[0]) for c in cands)
    out["top1_programs"] = [[program_name(p, names), n] for p, n in counts.most_common(5)]
    return out


def jsonable(x):
    """NaN -> None (strict JSON)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def ci(t) -> str:
    est, lo, hi = t
    return f"{100 * est:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.1f}"


def row(name: str, m: dict) -> str:
    return (f"| {name} | {pct(m['top1_full'])} | {m['distinct_top1']} ({pct(m['distinct_top1_share'])}) | "
            f"{pct(m['coverage_top1'])} / {pct(m['coverage_top5'])} | {pct(m['top1_acc_lower'])} | "
            f"{pct(m['top1_acc_graded'])} | {pct(m['pass5_lower'])} | {pct(m['pass5_graded'])} | "
            + (f"{m['departures']}: {pct(m['departures_top1_acc'])} vs {pct(m['departures_full_acc'])} |"
               if m["departures"] else "0 |"))


HEADER = ["| method | top-1 = full | distinct top-1 (share) | coverage top-1 / top-5 | top-1 acc (lower bound) "
          "| top-1 acc (among graded) | pass@5 (lower bound) | pass@5 (among graded) "
          "| top-1 != full: n: its acc vs full's |",
          "|---|---|---|---|---|---|---|---|---|"]


def target_decoding(train, full: tuple) -> dict:
    """Decode every training problem's own soft targets (as if the predictor reproduced them exactly:
    boundary logits ``logit(seg_target)``, op logits ``log(op_target / seg_target)``): the share whose
    top-1 is the full program, and whose top-1 is one of the problem's valid programs, per target option."""
    from polar.predictor import build_targets, load_search_results, records_from_sweep
    from polar.predictor._decode import decode
    from polar.predictor._train import merge_records

    records = merge_records(load_search_results([f"results/search/skip_loop/{f}.jsonl" for f in FAMILIES]),
                            records_from_sweep(train))
    out = {}
    for name, kw in (("plain", {}), ("lenpref", {"lenpref_beta": 0.05}), ("dropfull", {"drop_full_if_shorter": True}),
                     ("lenpref+dropfull", {"lenpref_beta": 0.05, "drop_full_if_shorter": True})):
        targets, _ = build_targets(records, len(full), 4, 0.3, max_runs=5, **kw)
        top = []
        for t in targets:
            seg = torch.logit(t.seg_target.clamp(1e-4, 1 - 1e-4))  # [D]
            ops = torch.log((t.op_target / t.seg_target.clamp(min=1e-6).unsqueeze(1)).clamp(min=1e-6))  # [D, C]
            top.append(decode(seg, ops, 1, 4)[0].program)
        out[name] = {"problems": len(targets), "top1_full": float(np.mean([tuple(p) == full for p in top])),
                     "top1_valid": float(np.mean([p in t.programs for p, t in zip(top, targets)])),
                     "full_valid": float(np.mean([t.full_valid for t in targets]))}
    return out


def old_segment_checkpoint(package: Path) -> Path:
    """The shipped segment predictor (skip_loop_r5): ``default_segments/`` where the scorer became
    the default, else ``default/``; the first folder holding a ``polar-predictor`` checkpoint."""
    for name in ("default_segments", "default"):
        cfg = package / name / "config.json"
        if cfg.is_file() and json.loads(cfg.read_text()).get("format") == "polar-predictor":
            return package / name
    raise SystemExit(f"no shipped segment predictor checkpoint under {package}")


def train_command(variant: str) -> str | None:
    log = HERE / variant / "train.log"
    if not log.is_file():
        return None
    for line in log.read_text().splitlines():
        m = re.match(rf"== {re.escape(variant)}: (python .*)$", line)
        if m:
            return m.group(1)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "python"))
    from polar.evaluation.learnability import family_of, program_columns
    from polar.predictor import Predictor, static_cover
    from polar.search import read_sweep

    os.chdir(ROOT)
    val_files = [f"results/sweep/programs/{f}_validation.jsonl.gz" for f in FAMILIES]
    train_files = [f"results/sweep/programs/{f}_train.jsonl.gz" for f in FAMILIES]
    val, train = read_sweep(val_files), read_sweep(train_files)
    if val.settings["library_sha256"] != train.settings["library_sha256"]:
        raise SystemExit("training and validation matrices have different libraries")
    prog_cols = program_columns(val)
    col_of = {tuple(val.entries[j].program): j for j in prog_cols}
    names = {tuple(val.entries[j].program): val.entries[j].name for j in prog_cols}
    D = int(val.records[0]["num_layers"])
    full = tuple(range(D))
    questions = [r["question"] for r in val.records]
    families = {}
    for i, r in enumerate(val.records):
        families.setdefault(family_of(r), []).append(i)
    families = {f: families[f] for f in FAMILIES if f in families}

    results: dict = {"k": K, "validation_files": val_files, "validation_problems": len(val.records),
                     "library": val.settings["library"], "library_programs": len(prog_cols),
                     "num_layers": D, "decode": "polar.predictor.DecodeConfig() defaults (threshold 0.5, beam 16, "
                     "no length penalty, no fallback)", "methods": {}, "variants": {}}
    methods = results["methods"]
    oracle = val.correct[:, prog_cols].any(axis=1)
    results["oracle_any_library_program"] = float(oracle.mean())
    results["oracle_families"] = {f: float(oracle[rows].mean()) for f, rows in families.items()}

    base = methods["base greedy (full program)"] = evaluate("base", [[full] for _ in questions], val, col_of, full,
                                                           names, families)
    cover = static_cover(train.correct, K, candidates=program_columns(train))
    static = [tuple(int(i) for i in train.entries[j].program) for j in cover]
    results["static_programs"] = [program_name(p, names) for p in static]
    stat = methods["static cover (training matrix, top-5)"] = evaluate("static", [static for _ in questions], val,
                                                                      col_of, full, names, families)
    ref = (base["_hits"][0].astype(float), stat["_hits"][1].astype(float))
    default_dir = old_segment_checkpoint(ROOT / "python" / "polar" / "predictor")
    results["old_checkpoint"] = str(default_dir.relative_to(ROOT))
    preds = Predictor.load(default_dir).predict(questions, k=K)
    methods["old default checkpoint (skip_loop_r5)"] = evaluate(
        "default", [[tuple(p.program) for p in ps] for ps in preds], val, col_of, full, names, families, ref)
    for v in args.variants:
        d = HERE / v
        if not (d / "model.safetensors").is_file():
            print(f"{v}: no checkpoint in {d}, skipped (run run.sh)")
            continue
        predictor = Predictor.load(d)
        preds = predictor.predict(questions, k=K)
        m = evaluate(v, [[tuple(p.program) for p in ps] for ps in preds], val, col_of, full, names, families, ref)
        training = predictor.metadata.get("training", {})
        m["training"] = {"best": training.get("best"), "epochs_run": training.get("epochs_run"),
                         "targets": {k: training.get("targets", {}).get(k) for k in
                                     ("problems", "with_targets", "used", "not_in_space", "full_downweighted",
                                      "full_dropped")},
                         "train_config": training.get("train_config"), "n_train": training.get("n_train"),
                         "n_val": training.get("n_val")}
        m["command"] = train_command(v)
        base, _, seed = v.partition("_seed")
        m["remedy"] = REMEDIES.get(base, "") + (f"; seed {seed} instead of 0" if seed else "")
        results["variants"][v] = m
        print(f"{v}: top-1 = full {pct(m['top1_full'])}%, distinct top-1 {m['distinct_top1']}, "
              f"top-1 acc {pct(m['top1_acc_lower'])}, pass@5 {pct(m['pass5_lower'])}")

    results["target_decoding"] = target_decoding(train, full)
    broke = {v: m["top1_full"] < COLLAPSED for v, m in results["variants"].items()}
    results["collapse_threshold"] = COLLAPSED
    results["breaks_collapse"] = broke
    for m in [*methods.values(), *results["variants"].values()]:
        m.pop("_hits")
    (HERE / "results.json").write_text(json.dumps(jsonable(results), indent=1) + "\n")
    (HERE / "results.md").write_text(markdown(results))
    print(f"wrote {HERE / 'results.md'} and {HERE / 'results.json'}")
    return 0


def markdown(res: dict) -> str:
    allm = {**res["methods"], **{f"`{v}`": m for v, m in res["variants"].items()}}
    base = res["methods"]["base greedy (full program)"]
    static = res["methods"]["static cover (training matrix, top-5)"]
    L = [
        "# Segment predictor retrained on the sweep matrices, with and without the anti-collapse remedies",
        "",
        "Issue 19 item 4. `run.sh` trains `polar train --head segments` (the paper's boundary/op predictor) on "
        "the dense training sweep matrices `results/sweep/programs/{L1..L5,words}_train.jsonl.gz` (a problem's "
        "valid programs: the library programs graded correct) united with the search results "
        "`results/search/skip_loop/*.jsonl`, `--max-runs 5 --seed 0 --threads 1`, polar's default 30 epochs "
        "(75-120 s per variant on one thread, so the epochs were not reduced), one variant per remedy of the "
        "reference code, and the two variants that leave the full program again with `--seed 1` (`*_seed1`); "
        "the checkpoint is the epoch with the best top-1 agreement on polar's internal 10% split of the training "
        "problems. `evaluate.py` grades each one's top-5 on the validation matrices. Reproduce: "
        "`bash results/predictor/segments_sweep/run.sh && python results/predictor/segments_sweep/evaluate.py` "
        "(the weights are not committed; `$DATA` below is the temp dir run.sh unpacks the matrices into).",
        "",
        f"Validation: {res['validation_problems']} problems "
        + ", ".join(f"{f} {m['n']}" for f, m in base["families"].items())
        + f"; library: `{res['library']}` ({res['library_programs']} programs, D = {res['num_layers']}). "
        f"Some library program is correct on {pct(res['oracle_any_library_program'])}% (oracle). Decoding: "
        f"{res['decode']}. Static cover (greedy set cover of the pooled training matrix): "
        + ", ".join(f"`{p}`" for p in res["static_programs"]) + ".",
        "",
        "Columns: *top-1 = full*: share of questions whose top-1 is the full program (the collapse measure); "
        "*distinct top-1*: number of different top-1 programs (share of questions); *coverage*: share of top-1 "
        "and of all top-5 candidates that are library entries (only those are graded by the matrix); "
        "*lower bound*: ungraded candidates count as wrong; *among graded*: top-1 over the questions whose "
        "top-1 is graded, pass@5 over the questions with at least one graded candidate (ungraded ones left out); "
        "*top-1 != full*: the number of questions whose top-1 is not the full program, and there the top-1's "
        "accuracy (lower bound) against the full program's. All numbers in %.",
        "",
        "## All validation questions",
        "",
        *HEADER,
        *[row(n, m) for n, m in allm.items()],
        "",
        "Paired bootstrap 95% intervals (2000 resamples of the validation questions, seed 0), in points:",
        "",
        "| method | top-1 acc lift over base greedy | pass@5 lift over the static cover |",
        "|---|---|---|",
        *[f"| {n} | {ci(m['top1_lift_vs_full'])} | {ci(m['pass5_lift_vs_static'])} |"
          for n, m in allm.items() if "top1_lift_vs_full" in m],
        "",
        "## Verdict",
        "",
    ]
    V = res["variants"]
    broke = [v for v, b in res["breaks_collapse"].items() if b]
    if not V:
        L.append("No variant trained yet.")
    else:
        L.append(f"Collapse measure: the share of validation questions whose top-1 is the full program; a variant "
                 f"counts as still collapsed at >= {pct(COLLAPSED)}%. " + "; ".join(
                     f"`{v}` {pct(m['top1_full'])}% ({m['distinct_top1']} distinct top-1)" for v, m in V.items()) + ".")
        L.append("")
        if not broke:
            L.append("**No remedy breaks the collapse.**")
        else:
            useful = [v for v in broke if V[v]["top1_lift_vs_full"][1] > 0]
            L.append(f"**{', '.join(f'`{v}`' for v in broke)} move{'s' if len(broke) == 1 else ''} the top-1 off the full "
                     f"program for part of the questions" + ("; the others do not" if len(broke) < len(V) else "")
                     + ".** "
                     + ("None of them is better for it: " if not useful else "")
                     + "; ".join(
                         f"`{v}`: {V[v]['departures']} questions leave the full program ("
                         + ", ".join(f"{f} {pct(1 - fm['top1_full'])}%" for f, fm in V[v]["families"].items()
                                     if fm["departures"]) + f"), to {V[v]['distinct_top1'] - (1 if V[v]['top1_full'] > 0 else 0)} "
                         f"other programs (most often " + ", ".join(f"`{p}` ({n})" for p, n in V[v]["top1_programs"][1:3])
                         + f"); there its top-1 is right on {pct(V[v]['departures_top1_acc'])}% against "
                         f"{pct(V[v]['departures_full_acc'])}% for the full program (which is right on "
                         f"{pct(V[v]['departures_families_full_acc'])}% of the same families' questions); top-1 lift "
                         f"over base greedy "
                         f"{ci(V[v]['top1_lift_vs_full'])}, pass@5 lift over the static cover "
                         f"{ci(V[v]['pass5_lift_vs_static'])}" for v in broke) + ".")
            L.append("")
            if not useful:
                L.append("So where a remedy breaks the collapse, the predictor does read something of the input "
                         "(it leaves the full program mostly on questions where the full program fails), but it "
                         "replaces it by single edits (most often of the last layers) that are rarely right either: no "
                         "variant's top-1 is better than base greedy with a 95% interval above 0.")
        best5 = max(V, key=lambda v: V[v]["pass5_lower"])
        L.append("")
        L.append(f"At k = 5 every variant stays below the input-independent static cover (best: `{best5}` "
                 f"{pct(V[best5]['pass5_lower'])}% against {pct(static['pass5_lower'])}%), as the old checkpoint does."
                 if all(m["pass5_lift_vs_static"][2] < 0 for m in V.values()) else
                 "At k = 5: see the pass@5 lift over the static cover above.")
    td = res.get("target_decoding")
    if td:
        L += ["", "## Why", "",
              "The op head predicts one run count per segment independently, so its top-1 is the per-segment "
              "argmax. On these matrices a problem's valid programs are mostly single edits of the full program at "
              "positions that vary (a median problem with targets has a dozen), so at almost every segment most "
              "of a problem's own valid programs keep it. Even a predictor that reproduced every training "
              "problem's own soft targets exactly (decoding logit(seg_target) and log(op_target / seg_target)) "
              "would put the full program first on " + "; ".join(
                  f"{pct(d['top1_full'])}% of the {d['problems']} training problems with {n} targets (top-1 valid "
                  f"{pct(d['top1_valid'])}%)" for n, d in td.items())
              + f", although the full program is valid on only {pct(td['plain']['full_valid'])}% of them (these "
              "numbers do not say which remedy moves a trained model; they say the targets themselves mostly "
              "decode to the full program). A predictor "
              "that cannot tell the problems apart fits the average of these targets, whose argmax is the full "
              "program; the remedies shift that average only a little (the full program has weight 0.3 among "
              "many programs, so dropping it changes little; exp(-0.05) per layer separates a skip from the full "
              "program by 5%; the anti-original penalty lowers P(keep) everywhere at once)."]
    L += ["", "## Per variant and family", ""]
    for name, m in allm.items():
        L.append(f"### {name}" + (f" ({m['remedy']})" if m.get("remedy") else ""))
        L.append("")
        if m.get("command"):
            L += ["```", m["command"].replace("/tmp/polar_segments_sweep_data/", "$DATA/"), "```", ""]
        if m.get("training"):
            t = m["training"]
            best = t.get("best") or {}
            tg = t.get("targets") or {}
            L.append(f"Training: {tg.get('problems')} problems, {tg.get('with_targets')} with targets "
                     f"({t.get('n_train')} train / {t.get('n_val')} internal validation), {tg.get('used')} programs "
                     f"used, {tg.get('not_in_space')} outside the compact space, full program down-weighted in "
                     f"{tg.get('full_downweighted')}, dropped in {tg.get('full_dropped')} problems; best epoch "
                     f"{best.get('epoch')} of {t.get('epochs_run')} (internal val top-1 "
                     f"{pct(best.get('val_top1'))}%, val loss {best.get('val_loss', float('nan')):.4f}).")
            L.append("")
        L += [*HEADER, *[row(f, fm) for f, fm in m["families"].items()], row("all", m), ""]
        L.append("Most frequent top-1 programs: " + ", ".join(f"`{p}` ({n})" for p, n in m["top1_programs"]) + ".")
        L.append("")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
