"""Measure synthetic levels / candidates and the word-problem family with SmolLM2-135M-Instruct.

    python measure.py probe [--n 30] [--names a,b,...]      base accuracy of candidates -> probe.json
    python measure.py final [--n 100]                      base + 24-single-edit oracle -> results.json

Full program list(range(30)); greedy; few-shot prompt polar.build_prompt(p, "fewshot");
stop_strings=["\\n"], max_new_tokens=8; graded by polar.is_correct.  The oracle runs the 24 edits
only on problems wrong at base (a problem right at base counts for the oracle anyway), all 24 of
them, so per-edit fix counts are reported too.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import polar  # noqa: E402  (the installed package; the recorded run partly used a snapshot of the commit before the layout change)

POLAR_SOURCE = "installed"

import torch

import fast
import levels
import word_problems

D = 30
FULL = list(range(D))
BATCH = 100


def all_single_edits(d=D, kmax=4):
    out = []
    for k in range(1, kmax + 1):
        for i in range(0, d - k + 1):
            out.append(("skip", i, k))
            out.append(("repeat", i, k))
    return out


def apply_edit(edit, d=D):
    kind, i, k = edit
    if kind == "skip":
        return list(range(0, i)) + list(range(i + k, d))
    return list(range(0, i + k)) + list(range(i, i + k)) + list(range(i + k, d))


def pick_edits(seed=0, n_skip=12, n_repeat=12):
    """12 skips + 12 repeats, uniform over blocks of k=1..4 (skips never drop layer 0)."""
    rng = random.Random(seed)
    edits = all_single_edits()
    skips = [e for e in edits if e[0] == "skip" and e[1] > 0]
    repeats = [e for e in edits if e[0] == "repeat"]
    chosen = rng.sample(skips, n_skip) + rng.sample(repeats, n_repeat)
    return sorted(chosen, key=lambda e: (e[0], e[1], e[2]))


class Runner:
    def __init__(self):
        torch.set_num_threads(1)
        self.model, self.tok = polar.load_default()
        self.rows = 0
        self.seconds = 0.0
        self.cache_path = os.path.join(HERE, "cache.json")
        self.cache = json.load(open(self.cache_path)) if os.path.exists(self.cache_path) else {}

    def run(self, problems, programs):
        """problems: list of polar.Problem; programs: same length. -> list of (text, correct)."""
        out = [None] * len(problems)
        keys = [f"{p.question}|{p.answer}|{','.join(map(str, prog))}" for p, prog in zip(problems, programs)]
        for r, k in enumerate(keys):
            if k in self.cache:
                out[r] = tuple(self.cache[k])
        todo = [r for r in range(len(problems)) if out[r] is None]
        order = sorted(todo, key=lambda r: len(problems[r].question))
        for s in range(0, len(order), BATCH):
            idx = order[s:s + BATCH]
            prompts = [polar.build_prompt(problems[r], "fewshot") for r in idx]
            t0 = time.time()
            with torch.inference_mode():
                g = polar.generate(self.model, self.tok, prompts, [programs[r] for r in idx],
                                   max_new_tokens=8, stop_strings=["\n"])
            self.seconds += time.time() - t0
            self.rows += len(idx)
            for r, text in zip(idx, g.texts):
                out[r] = (text, bool(polar.is_correct(text, problems[r])))
                self.cache[keys[r]] = list(out[r])
            json.dump(self.cache, open(self.cache_path, "w"))
            print(f"  [{self.rows} rows, {self.seconds:.0f}s, {self.rows / max(self.seconds, 1e-9):.2f} rows/s]", flush=True)
        return out


def level_problems(name, n, seed=0):
    return [polar.Problem(id=i, question=q, answer=str(a), source=f"levels:{name}")
            for i, q, a in levels.problems(name, n, None, seed)]


def word_family(n, split=None, seed=0):
    ps = word_problems.word_problems(n, split, seed)
    return [polar.Problem(id=i, question=q, answer=str(a), source=f"word:{t}") for i, q, a, t in ps]


def probe(args):
    runner = Runner()
    names = args.names.split(",") if args.names else list(levels.CANDIDATES)
    path = os.path.join(HERE, "probe.json")
    res = json.load(open(path)) if os.path.exists(path) else {}
    for name in names:
        t0 = time.time()
        ps = word_family(args.n, None, args.seed) if name == "word" else level_problems(name, args.n, seed=args.seed)
        out = runner.run(ps, [FULL] * len(ps))
        c = sum(ok for _, ok in out)
        res[f"{name}@s{args.seed}"] = dict(n=len(ps), base_correct=c, base_pct=round(100 * c / len(ps), 1),
                         seconds=round(time.time() - t0, 1),
                         samples=[(p.question, p.answer, t) for p, (t, _) in list(zip(ps, out))[:6]])
        print(f"{name:20s} {c:3d}/{len(ps)} = {100 * c / len(ps):5.1f}%  ({time.time() - t0:.0f}s)", flush=True)
        json.dump(res, open(path, "w"), indent=1)


def measure_family(runner, key, desc, distinct, ps, edits, extra=None):
    t0 = time.time()
    base = runner.run(ps, [FULL] * len(ps))
    wrong = [i for i, (_, ok) in enumerate(base) if not ok]
    rows_p, rows_e = [], []
    for i in wrong:  # row j * len(edits) + e: wrong problem j, edit e
        for e in range(len(edits)):
            rows_p.append(i)
            rows_e.append(e)
    # edits: shared-prefix runner (fast.py), one batch per edit over the wrong problems
    t1 = time.time()
    out = [None] * len(rows_p)
    if wrong:
        for e, edit in enumerate(edits):
            texts = fast.generate_shared(runner.model, runner.tok,
                                         [polar.build_prompt(ps[i], "fewshot") for i in wrong], apply_edit(edit))
            for j, (i, text) in enumerate(zip(wrong, texts)):
                out[j * len(edits) + e] = (text, bool(polar.is_correct(text, ps[i])))
    t_edits = time.time() - t1
    # cross-check: one random wrong problem per edit through polar.generate
    rng = random.Random(f"xcheck/{key}")
    sample = [(rng.randrange(len(wrong)), e) for e in range(len(edits))] if wrong else []
    chk = runner.run([ps[wrong[j]] for j, _ in sample], [apply_edit(edits[e]) for _, e in sample])
    agree = sum(c[0] == out[j * len(edits) + e][0] for (j, e), c in zip(sample, chk))
    fixed_by = {}
    per_edit = [0] * len(edits)
    for i, e, (_, ok) in zip(rows_p, rows_e, out):
        if ok:
            fixed_by.setdefault(i, []).append(e)
            per_edit[e] += 1
    # base-correct problems: how many edits keep them right is not measured (not needed for oracle)
    n = len(ps)
    bc = n - len(wrong)
    oc = bc + len(fixed_by)
    rec = dict(definition=desc, distinct=distinct, n=n, base_correct=bc, base_pct=round(100 * bc / n, 1),
               oracle_correct=oc, oracle_pct=round(100 * oc / n, 1), fixed=len(fixed_by),
               fixes_per_edit=per_edit, seconds=round(time.time() - t0, 1),
               rows=n + len(rows_p), edit_seconds=round(t_edits, 1),
               crosscheck_polar_generate=f"{agree}/{len(sample)} identical texts",
               fixed_examples=[dict(q=ps[i].question, gold=ps[i].answer, base=base[i][0],
                                    edits=[list(edits[e]) for e in es][:3])
                               for i, es in list(fixed_by.items())[:5]])
    if extra:
        rec.update(extra(ps, base, fixed_by))
    print(f"{key:10s} {desc:55s} base {bc}/{n} oracle {oc}/{n} fixed {len(fixed_by)} ({rec['seconds']}s)",
          flush=True)
    return rec


def final(args):
    runner = Runner()
    edits = pick_edits(seed=0)
    path = os.path.join(HERE, "results.json")
    res = json.load(open(path)) if os.path.exists(path) and args.resume else {}
    res["_setup"] = dict(model="SmolLM2-135M-Instruct (polar.load_default)", program="list(range(30))",
                         prompt="polar.build_prompt(p, 'fewshot')", decoding="greedy, max_new_tokens=8, stop_strings=['\\n']",
                         grading="polar.is_correct", polar_source=POLAR_SOURCE, torch_threads=1,
                         edits_seed=0, edits=[dict(kind=k, start=i, k=kk, program=apply_edit((k, i, kk)))
                                              for k, i, kk in edits],
                         problems_seed=0, n=args.n)
    only = args.only.split(",") if args.only else None
    for lv, name in levels.LEVELS.items():
        key = f"level{lv}"
        if only and key not in only or key in res:
            continue
        ps = level_problems(name, args.n, seed=0)
        res[key] = dict(name=name, **measure_family(runner, key, levels.description(lv),
                                                      levels.distinct_count(lv), ps, edits))
        json.dump(res, open(path, "w"), indent=1)

    if not (only and "word" not in only) and "word" not in res:
        ps = word_family(args.n, None, 0)
        tids = [p.source.split(":")[1] for p in ps]

        def per_template(ps_, base, fixed_by):
            t = {}
            for i, (p, (_, ok)) in enumerate(zip(ps_, base)):
                d = t.setdefault(tids[i], [0, 0, 0])
                d[0] += 1
                d[1] += ok
                d[2] += ok or i in fixed_by
            return dict(per_template={k: dict(n=v[0], base=v[1], oracle=v[2]) for k, v in sorted(t.items())})

        res["word"] = dict(name="word_problems", **measure_family(
            runner, "word", f"{len(word_problems.TEMPLATES)} templated word problems, small numbers (all splits)",
            None, ps, edits, per_template))
        json.dump(res, open(path, "w"), indent=1)
    res["_setup"]["rows_total"] = runner.rows
    res["_setup"]["generate_seconds"] = round(runner.seconds, 1)
    json.dump(res, open(path, "w"), indent=1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["probe", "final"])
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--names", default=None)
    ap.add_argument("--only", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.n is None:
        a.n = 30 if a.mode == "probe" else 100
    probe(a) if a.mode == "probe" else final(a)
