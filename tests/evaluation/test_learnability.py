"""The learnability study: set cover vs brute force, pass@k curves, bootstrap intervals, AUC, the
cost model, and an end-to-end run on a small synthetic sweep written in polar sweep's format."""
import itertools
import json
import math
import random

import numpy as np
import pytest

from polar.evaluation.learnability import (analyze_sweep, auc, bootstrap_ci, candidate_costs, choose_mix,
                                           cumulative_cost, family_of, mix_pass_curve, nn_rankings, pass_curve,
                                           random_pass_curve, sample_pass_curve, static_order)
from polar.search import LibraryEntry, SweepMatrix, build_library, read_sweep
from polar.testing import write_sweep_file

D = 6


# --- set cover ----------------------------------------------------------------------------------


def coverage(c: np.ndarray, cols) -> int:
    return int(c[:, list(cols)].any(axis=1).sum()) if cols else 0


@pytest.mark.parametrize("seed", range(6))
def test_static_cover_is_the_greedy_cover_and_near_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    c = rng.random((14, 7)) < rng.uniform(0.1, 0.5, size=7)  # [P, L]
    cols = list(range(7))
    order = static_order(c, cols, 4)
    assert len(order) == len(set(order)) == 4
    for k in range(1, 5):
        prefix = order[:k]
        # each pick has the largest marginal gain (brute force over the columns left)
        gains = [coverage(c, prefix[:-1] + [j]) for j in cols if j not in prefix[:-1]]
        assert coverage(c, prefix) == max(gains)
        best = max(coverage(c, s) for s in itertools.combinations(cols, k))
        assert coverage(c, prefix) >= (1 - 1 / math.e) * best
        if k == 1:
            assert coverage(c, prefix) == best


def test_static_cover_beats_top_accuracy_where_programs_overlap():
    # columns 0 and 1 are right on the same 4 rows, column 2 on 3 other rows
    c = np.zeros((8, 3), dtype=bool)
    c[:4, 0] = c[:4, 1] = True
    c[4:7, 2] = True
    assert static_order(c, [0, 1, 2], 2) == [0, 2]
    assert coverage(c, [0, 2]) == max(coverage(c, s) for s in itertools.combinations(range(3), 2)) == 7
    assert static_order(c, [1, 2], 2) == [1, 2]  # only the candidate columns


# --- pass@k ---------------------------------------------------------------------------------------


def test_pass_curves():
    c = np.array([[0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
    orders = np.array([[0, 1, 2], [0, 2, -1], [2, 1, 0]])
    assert pass_curve(c, orders).tolist() == [[False, False, True], [True, True, True], [False, False, False]]
    s = np.array([[0, 1, 0, 1], [0, 0, 0, 1]], dtype=bool)
    assert sample_pass_curve(s, 3).mean(axis=0).tolist() == [0.0, 0.5, 0.5]
    with pytest.raises(ValueError):
        sample_pass_curve(s, 5)


@pytest.mark.parametrize("seed", range(4))
def test_mix_pass_curve_is_any_of_the_first_programs_or_samples(seed):
    rng = np.random.default_rng(seed)
    c = rng.random((12, 6)) < 0.25                       # [P, programs]
    orders = np.stack([rng.permutation(6) for _ in range(12)])
    s = rng.random((12, 7)) < 0.3                        # [P, samples]
    for m in range(6):
        got = mix_pass_curve(pass_curve(c, orders), sample_pass_curve(s, 6), m, 6)
        for i in range(12):
            for k in range(1, 7):
                want = c[i, orders[i, :min(k, m)]].any() or s[i, :max(k - m, 0)].any()
                assert got[i, k - 1] == want, (m, i, k)
    with pytest.raises(ValueError):
        mix_pass_curve(pass_curve(c, orders), sample_pass_curve(s, 6), 7, 6)


def test_choose_mix_takes_the_best_split_and_breaks_ties_toward_fewer_programs():
    # 6 problems: programs (in order) right on rows 0-1 (first program) and 2 (second); samples at
    # T=0.7 right on rows 3-4 (first sample), at T=0.3 on row 3 only
    prog = np.zeros((6, 3), dtype=bool)
    prog[:2, :] = True
    prog[2, 1:] = True
    s07 = np.zeros((6, 3), dtype=bool)
    s07[3:5, :] = True
    s03 = np.zeros((6, 3), dtype=bool)
    s03[3, :] = True
    ch = choose_mix(prog, {0.3: s03, 0.7: s07}, 3)
    # m = 2 programs + 1 sample at 0.7 covers rows 0-4: 5/6 (m = 1 + 2 samples: 4/6; m = 3: 3/6)
    assert (ch["m"], ch["temperature"]) == (2, 0.7) and ch["pass"] == pytest.approx(5 / 6)
    assert ch["grid"]["3/0.3"] == ch["grid"]["3/0.7"] == pytest.approx(3 / 6)
    tie = choose_mix(np.zeros((4, 2), dtype=bool), {1.0: np.ones((4, 2), dtype=bool), 0.3: np.ones((4, 2), dtype=bool)}, 2)
    assert (tie["m"], tie["temperature"]) == (0, 0.3)  # all ties: fewer programs, then the lower temperature


def test_random_pass_curve_is_the_exact_expectation_over_draws():
    c = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=bool)
    cols = [0, 1, 2, 3, 4]
    got = random_pass_curve(c, cols, 5)
    for k in range(1, 6):
        subsets = list(itertools.combinations(cols, k))
        want = [np.mean([c[i, list(s)].any() for s in subsets]) for i in range(3)]
        assert got[:, k - 1] == pytest.approx(want)
    assert random_pass_curve(c, [1, 2], 3)[:, 2].tolist() == [0.0, 0.0, 1.0]  # k > N: any of them


def test_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(0)
    for _ in range(5):
        diffs = rng.choice([-1.0, 0.0, 1.0], size=40, p=[0.2, 0.5, 0.3])
        est, lo, hi = bootstrap_ci(diffs, n=500, seed=1)
        assert est == pytest.approx(diffs.mean()) and lo <= est <= hi and lo < hi
    assert bootstrap_ci(np.zeros(10), n=100) == (0.0, 0.0, 0.0)
    est, lo, hi = bootstrap_ci([np.ones(5), np.zeros(50)], n=200)  # stratified: the mean of the means
    assert est == pytest.approx(0.5) and lo == hi == pytest.approx(0.5)
    assert lo <= est <= hi
    assert all(math.isnan(x) for x in bootstrap_ci([], n=10))
    # a clear effect: the interval excludes 0
    est, lo, hi = bootstrap_ci(np.r_[np.ones(30), np.zeros(10)], n=500)
    assert lo > 0


def test_auc_counts_pairs():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, 30).astype(float)  # many ties
    t = rng.random(30) < 0.4
    pairs = [(a, b) for a in s[t] for b in s[~t]]
    want = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert auc(s, t) == pytest.approx(want)
    assert math.isnan(auc(s, np.zeros(30, dtype=bool)))
    assert auc(np.array([1.0, 2.0]), np.array([False, True])) == 1.0


def test_cost_model():
    entries = [LibraryEntry("full", (0, 1, 2, 3)), LibraryEntry("skip 2", (0, 1, 3)),
               LibraryEntry("repeat 0", (0, 0, 1, 2, 3)), LibraryEntry("T=0.7 #0", (0, 1, 2, 3), 0.7, 0)]
    m = SweepMatrix([{"id": "a"}], entries, np.zeros((1, 4), bool), [[None] * 4], np.zeros((1, 4)),
                    np.zeros((1, 4)), np.array([[2, 3, 4, 5]]), {})
    base, per = candidate_costs(m, np.array([10.0]))
    assert base.tolist() == [40.0]
    # full: no new prefill; skip 2: steps 2.. (1 step) x 10 + 3 x 3; repeat 0: steps 1.. (4) x 10 + 5 x 4; sample: 4 x 5
    assert per.tolist() == [[8.0, 19.0, 60.0, 20.0]]
    assert cumulative_cost(base, per, np.array([[1, 0, -1]])).tolist() == [[59.0, 67.0, 67.0]]


def test_family_of():
    assert family_of({"source": "synthetic", "level": 3}) == "L3"
    assert family_of({"source": "words", "level": 1}) == "words"
    assert family_of({"source": "gsm8k"}) == "gsm8k"


def test_nearest_neighbours_rank_by_the_neighbours_validity():
    train_emb = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    train = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 0]], dtype=bool)
    rank, cover = nn_rankings(train_emb, train, np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 1, 2], 2, 2, 3)
    assert rank.orders.tolist() == [[0, 2], [1, 0]]
    assert rank.scores[0].tolist() == [1.0, 0.0, 0.5]
    assert cover.orders[:, 0].tolist() == [0, 1]


# --- end to end on a synthetic sweep ------------------------------------------------------------

MARKERS = {"alpha": "skip 2", "beta": "repeat 3", "gamma": "skip 4"}
VOCAB = sorted(set(MARKERS) | {f"w{i}" for i in range(12)})


def embed_words(questions):
    """A bag-of-words stand-in for the encoder (unit vectors)."""
    out = np.zeros((len(questions), len(VOCAB)))
    for i, q in enumerate(questions):
        for w in q.split():
            if w in VOCAB:
                out[i, VOCAB.index(w)] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def make_records(entries, family, split, n, seed, samples=False):
    """Problems whose marker word decides which single edit is right (the planted rule); the full
    program right on ~30%, other programs on ~5%."""
    rng = random.Random(f"{family}/{split}/{seed}")
    out = []
    for i in range(n):
        marker = rng.choice(sorted(MARKERS))
        q = f"{marker} {rng.choice(VOCAB[3:])} {rng.choice(VOCAB[3:])}"
        gold = str(10 + i)
        cells = []
        for j, e in enumerate(entries):
            if samples:
                ok = rng.random() < 0.3 + 0.1 * (e.temperature or 0)
            elif e.name == "full":
                ok = rng.random() < 0.3
            else:
                ok = e.name == MARKERS[marker] and rng.random() < 0.9 or rng.random() < 0.05
            ans = gold if ok else str(rng.choice([1, 2, 3]))
            cells.append((f" {ans}\n", ans, int(ok), round(-rng.random() * (0.5 if ok else 2.0), 5), -0.5,
                          rng.randint(2, 5)))
        source, level = ("synthetic", int(family[1])) if family.startswith("L") else (family, None)
        rec = {"id": f"{family}-{split}-{i}", "question": q, "gt_ans": gold, "source": source, "level": level,
               "choices": None, "num_layers": D}
        for f, vals in zip(("texts", "answers", "correct", "logprob_first", "logprob_mean", "new_tokens"), zip(*cells)):
            rec[f] = list(vals)
        out.append(rec)
    return out


def write_sweep(path, entries, records, spec):
    settings = {"model": "tiny", "data": "synthetic", "library": spec, "prompt_style": "fewshot",
                "max_new_tokens": 50, "early_answer": True, "seed": 0}
    return write_sweep_file(path, entries, records, settings, spec=spec)


class PlantedScorer:
    """A scorer stand-in that knows the planted rule (for the text scorer) or nothing (constant)."""

    def __init__(self, entries, informed=True):
        self.entries, self.informed = entries, informed
        self.names = [e.name for e in entries]

    def predict_proba(self, questions, llm_features=None):
        p = np.full((len(questions), len(self.entries)), 0.05)
        p[:, self.names.index("full")] = 0.3
        if self.informed:
            for i, q in enumerate(questions):
                p[i, self.names.index(MARKERS[q.split()[0]])] = 0.9
        return p

    def select(self, row, k):
        return [int(j) for j in np.argsort(-np.asarray(row), kind="stable")[:k]]


@pytest.fixture(scope="module")
def sweep_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    spec = "full,skip:1,repeat:1"
    entries = build_library(spec, D)
    s_spec = "samples:0.3:6,samples:0.7:6,samples:1:6"
    s_entries = build_library(s_spec, D)
    files = {"train": [], "validation": [], "test": [], "samples": [], "val_samples": []}
    for fam in ("L1", "L2", "words"):
        for split, n in (("train", 40), ("validation", 20), ("test", 30)):
            files[split].append(write_sweep(root / f"{fam}_{split}.jsonl", entries,
                                            make_records(entries, fam, split, n, 0), spec))
        files["samples"].append(write_sweep(root / f"{fam}_test_samples.jsonl", s_entries,
                                            make_records(s_entries, fam, "test", 30, 0, samples=True), s_spec))
        if fam != "words":  # validation samples of some families only: the mix is chosen on those
            files["val_samples"].append(write_sweep(root / f"{fam}_validation_samples.jsonl", s_entries,
                                                    make_records(s_entries, fam, "validation", 20, 0, samples=True),
                                                    s_spec))
    files["entries"] = entries
    return files


def test_analyze_sweep_end_to_end(sweep_files, tmp_path):
    f = sweep_files
    out = tmp_path / "learn"
    scorer = PlantedScorer(f["entries"][:-2])  # a scorer library may be a subset of the sweep's
    summary = analyze_sweep(f["train"], f["test"], out, val_paths=f["validation"], sample_paths=f["samples"],
                            val_sample_paths=f["val_samples"],
                            scorer=scorer, scorer_llm=PlantedScorer(f["entries"], informed=False),
                            k_max=5, deploy_k=3, bootstrap=300, embed=embed_words)
    for name in ("findings.md", "summary.json", "pass_at_k.png", "pass_vs_compute.png", "lift.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved["families"]) == {"L1", "L2", "words"}
    assert saved["neighbours"] in (5, 10, 20, 40)  # chosen on validation
    test = read_sweep(f["test"])
    fam = summary["families"]["L1"]
    rows = [i for i, r in enumerate(test.records) if family_of(r) == "L1"]
    # oracle and base greedy straight from the matrix
    assert fam["pass"]["oracle"][0] == pytest.approx(test.correct[rows].any(axis=1).mean())
    assert fam["pass"]["base greedy"][0] == pytest.approx(test.correct[rows, 0].mean())
    for name, curve in fam["pass"].items():
        assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:])), name  # pass@k never falls with k
        assert curve[-1] <= fam["pass"]["oracle"][-1] + 1e-12 or name.startswith(("T=", "mix: ")), name  # samples: no bound
    assert {"static", "static (family)", "nn (rank)", "nn (cover)", "scorer (text)", "scorer (llm)", "random edit",
            "T=0.3", "T=0.7", "T=1"} <= set(fam["pass"])
    # the planted rule is learnable from the words: nn and the informed scorer beat best static at k = 1
    for name in ("nn (rank)", "scorer (text)"):
        est, lo, hi = fam["lift"][name][0]
        assert lo <= est <= hi and lo > 0, name
        assert summary["families"]["L1"]["auc"][name]["mean"] > 0.7
    assert summary["families"]["L1"]["auc"]["scorer (llm)"]["mean"] == pytest.approx(0.5)  # constant scores
    assert summary["verdict"]["input_predicts_program"] is True
    avg_lo = summary["average"]["lift"]["scorer (text)"][0][1]  # k = 1 (at k = 3 static covers all 3 rules)
    assert avg_lo > 0
    # costs: base greedy is the unit; more candidates cost more; the deployable table is there
    assert fam["cost"]["base greedy"][0] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(fam["cost"]["static"], fam["cost"]["static"][1:]))
    assert fam["answer"]["scorer (text)"]["auto_rule"] in ("top1", "vote", "gate")
    assert 0.0 <= fam["answer"]["scorer (text)"]["gate"] <= 1.0
    # mixes of programs and samples: chosen on the validation samples (L1, L2), applied on test
    mixes = summary["mixes_chosen_on_validation"]
    assert set(mixes) == {"static", "scorer (text)"}
    for base, ch in mixes.items():
        assert 0 <= ch["m"] <= 3 and ch["temperature"] in (0.3, 0.7, 1.0)
        assert ch["validation_problems"] == 40 and ch["validation_families"] == ["L1", "L2"]
        assert ch["pass"] == pytest.approx(max(ch["grid"].values()))
        name = f"mix: {base} + samples"
        curve = fam["pass"][name]
        assert curve[:ch["m"]] == pytest.approx(fam["pass"][base][:ch["m"]])  # its first m are the programs
        assert all(a <= b + 1e-12 for a, b in zip(curve, curve[1:]))
        assert len(fam["cost"][name]) == 5 and all(a < b for a, b in zip(fam["cost"][name], fam["cost"][name][1:]))
    assert {"mix: scorer (text) + samples", "mix: static + samples",
            "mix: scorer (text) + samples vs mix: static + samples"} <= set(summary["average"]["mix_lift"])
    assert not any(n.startswith("mix") for n in summary["verdict"]["selectors"])  # not an input feature
    text = (out / "findings.md").read_text()
    assert "## Verdict" in text and "Yes:" in text and "## L1" in text and "Average over" in text
    assert "Programs mixed with samples" in text


def test_analyze_sweep_without_validation_or_samples_and_bad_input(sweep_files, tmp_path):
    f = sweep_files
    summary = analyze_sweep(f["train"], f["test"][:1], tmp_path / "a", k_max=3, bootstrap=50, embed=embed_words,
                            plots=False)
    assert summary["neighbours"] == 20 and list(summary["families"]) == ["L1"]
    assert "T=0.7" not in summary["families"]["L1"]["pass"]
    assert "gate" not in summary["families"]["L1"]["answer"]["nn (rank)"]
    with pytest.raises(ValueError, match="library"):
        analyze_sweep(f["train"], f["samples"][:1], tmp_path / "b", embed=embed_words)
    with pytest.raises(FileNotFoundError):
        analyze_sweep([tmp_path / "none.jsonl"], f["test"], tmp_path / "c", embed=embed_words)


def test_cli_analyze_sweep(sweep_files, tmp_path, capsys):
    from polar.cli import main
    from polar.testing import save_tiny_model

    enc = tmp_path / "enc"
    save_tiny_model(enc)  # a tiny transformers folder as the neighbour encoder (no MiniLM download)
    f = sweep_files
    out = tmp_path / "cli"
    rc = main(["analyze-sweep", "--train", *map(str, f["train"]), "--test", *map(str, f["test"]),
               "--val", *map(str, f["validation"]), "--samples", *map(str, f["samples"]),
               "--val-samples", *map(str, f["val_samples"]), "--encoder", str(enc),
               "--k-max", "4", "--deploy-k", "2", "--bootstrap", "50", "--out", str(out), "--threads", "1"])
    assert rc == 0
    assert "## Verdict" in capsys.readouterr().out
    saved = json.loads((out / "summary.json").read_text())
    assert saved["k_max"] == 4 and set(saved["mixes_chosen_on_validation"]) == {"static"}  # no --scorer given
    assert (out / "pass_vs_compute.png").is_file()
    assert main(["analyze-sweep", "--train", str(tmp_path / "missing.jsonl"), "--test", *map(str, f["test"]),
                 "--encoder", str(enc), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["analyze-sweep", "--train", *map(str, f["train"]), "--test", *map(str, f["test"]),
                 "--encoder", str(enc), "--k-max", "0", "--out", str(tmp_path / "y")]) == 2


def test_a_test_only_family_is_reported_outside_the_in_distribution_average(sweep_files, tmp_path):
    f = sweep_files
    entries = f["entries"]
    ood = write_sweep(tmp_path / "gsm8k_test.jsonl", entries, make_records(entries, "gsm8k", "test", 20, 0),
                      "full,skip:1,repeat:1")
    summary = analyze_sweep(f["train"], f["test"] + [ood], tmp_path / "out", val_paths=f["validation"], k_max=3,
                            deploy_k=2, bootstrap=50, embed=embed_words, plots=False)
    fam = summary["families"]["gsm8k"]
    assert fam["n"] == 20 and fam["train_n"] == 0 and "static (family)" not in fam["pass"]
    assert "gsm8k" not in summary["in_distribution"] and set(summary["in_distribution"]) == {"L1", "L2", "words"}
    assert fam["answer"]["static"]["auto_rule"] in ("top1", "vote", "gate")
