"""The scorer (polar.predictor._scorer): planted rules, checkpoints, search cells, LLM features."""
import json
import time
import zlib

import numpy as np
import pytest
import torch

from polar.predictor import (Scorer, ScorerTrainConfig, expected_pass_at_k, llm_features, llm_features_cached,
                             program_features, train_scorer, train_scorer_from_files)
from polar.predictor._encoder import TextEncoder
from polar.search import LibraryEntry, SweepMatrix, read_sweep
from polar.testing import write_sweep_file

torch.set_num_threads(1)

D = 6
PROGRAMS = [tuple(range(D)), (0, 1, 3, 4, 5), (0, 1, 2, 3, 2, 3, 4, 5), (0, 2, 3, 4, 5), (0, 1, 2, 3, 4),
            (1, 2, 3, 4, 5)]
ENTRIES = [LibraryEntry(f"e{j}", p) for j, p in enumerate(PROGRAMS)] + [LibraryEntry("T=0.7 #0", PROGRAMS[0], 0.7, 0)]
MARKERS = ["add", "multiply", "divide", "subtract", "square", "compare"]
FILLERS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "chair", "piano", "grass", "ocean", "candle",
           "rocket", "silver", "garden", "window", "pencil", "forest", "castle", "bridge", "violet"]
HELD_OUT = ["marble", "comet", "saddle", "tunnel", "meadow", "copper", "feather", "harbor", "island", "jacket"]
SETTINGS = {"model": "toy", "data": "toy", "library": "toy", "prompt_style": "fewshot", "max_new_tokens": 8,
            "early_answer": True, "seed": 0}


class BagOfWords(TextEncoder):
    """A stand-in text encoder: each word of the tests' vocabulary a one-hot vector, other words
    hashed into the rest (fast, deterministic)."""

    VOCAB = {w: i for i, w in enumerate(MARKERS + FILLERS + HELD_OUT)}

    def __init__(self, dim: int = 64):
        super().__init__()
        self.spec, self.dim, self.max_tokens = f"bow{dim}", dim, 64

    def index(self, word: str) -> int:
        n = len(self.VOCAB)
        return self.VOCAB[word] if word in self.VOCAB else n + zlib.crc32(word.encode()) % (self.dim - n)

    def identity(self) -> str:
        return f"bow:{self.dim}"

    def encode(self, texts):
        words = [t.split()[: self.max_tokens] or ["."] for t in texts]
        T = max(len(w) for w in words)
        tokens, mask = torch.zeros(len(texts), T, self.dim), torch.zeros(len(texts), T, dtype=torch.bool)
        for r, ws in enumerate(words):
            for c, w in enumerate(ws):
                tokens[r, c, self.index(w)] = 1.0
                mask[r, c] = True
        return tokens, mask


def planted(n: int, seed: int, fillers, entries=ENTRIES) -> SweepMatrix:
    """Program j is correct iff marker j is in the question; the sample column is noise."""
    rng = np.random.default_rng(seed)
    records, C = [], np.zeros((n, len(entries)), bool)
    for i in range(n):
        m = int(rng.integers(len(MARKERS)))
        words = list(rng.choice(fillers, 5))
        words.insert(int(rng.integers(6)), MARKERS[m])
        records.append({"id": f"s{seed}-{i}", "question": " ".join(words), "gt_ans": "1", "source": "toy",
                        "level": 1, "choices": None, "num_layers": D})
        C[i, m] = True
        C[i, -1] = rng.random() < 0.5
    z = np.zeros(C.shape)
    return SweepMatrix(records, list(entries), C, [[None] * len(entries) for _ in range(n)], z, z, z.astype(int),
                       dict(SETTINGS))


def top1(scorer, m) -> float:
    proba = scorer.predict_proba([r["question"] for r in m.records])
    return float(m.correct[np.arange(len(proba)), proba.argmax(1)].mean())


def test_scorer_learns_a_planted_rule_on_held_out_questions():
    train, val, test = planted(240, 0, FILLERS), planted(60, 1, FILLERS), planted(80, 2, HELD_OUT)
    scorer = train_scorer(train, val, {"encoder": "bow64"}, ScorerTrainConfig(epochs=150), encoder=BagOfWords(),
                          progress=False)
    assert [e.name for e in scorer.entries] == [f"e{j}" for j in range(6)]  # the sample entry is not a program
    assert top1(scorer, test) >= 0.9
    val_metrics = scorer.metadata["validation"]
    assert val_metrics["top1"] >= 0.9 and val_metrics["pass@5"] >= val_metrics["static_pass@5"]
    # selection: greedy expected pass@k never below the independent argmaxes
    proba = scorer.predict_proba([r["question"] for r in test.records[:10]])
    lengths = np.array([len(e.program) for e in scorer.entries])
    for row in proba:
        chosen = scorer.select(row, 3, max_mean_layers=None)
        argmax = list(np.argsort(-row)[:3])
        assert expected_pass_at_k(row, chosen, scorer.train_correct) >= \
            expected_pass_at_k(row, argmax, scorer.train_correct) - 1e-12
        bounded = scorer.select(row, 3)  # the default: the 3 never cost more than 3 full programs
        assert len(bounded) == 3 and lengths[bounded].sum() <= 3 * D
    # the deployable rule chosen on the held-out split: a scorer that finds the valid program
    # answers with its top program; its recorded accuracy is the top program's real one
    from polar.evaluation.learnability import scorer_selection
    for i, r in enumerate(test.records):
        test.answers[i] = ["1" if c else "2" for c in test.correct[i]]
    choice = scorer_selection(scorer, test, 3)
    proba = scorer.predict_proba([r["question"] for r in test.records])
    firsts = [scorer.select(row, 3)[0] for row in proba]
    assert choice["candidates"]["top1"]["accuracy"] == pytest.approx(float(test.correct[np.arange(len(firsts)), firsts].mean()))
    assert choice["rule"] == "top1" and choice["val_accuracy"] >= 0.9 and choice["val_problems"] == len(test.records)


def test_scorer_with_the_real_minilm_encoder():
    from polar.predictor import load_encoder

    try:
        encoder = load_encoder("minilm", max_tokens=32)
    except Exception as err:  # not installed / not cached: nothing to test here
        pytest.skip(f"MiniLM not available: {err}")
    start = time.perf_counter()
    train, test = planted(150, 0, FILLERS), planted(50, 2, HELD_OUT)
    scorer = train_scorer(train, None, {}, ScorerTrainConfig(epochs=100), encoder=encoder, progress=False)
    assert top1(scorer, test) >= 0.9
    assert time.perf_counter() - start < 60


def test_save_load_round_trip(tmp_path):
    train = planted(60, 0, FILLERS)
    enc = BagOfWords()
    scorer = train_scorer(train, None, {"encoder": "bow64", "head": "mlp", "d": 16, "hidden": 32},
                          ScorerTrainConfig(epochs=5, val_fraction=0.2), encoder=enc, progress=False)
    scorer.save(tmp_path / "ck")
    loaded = Scorer.load(tmp_path / "ck", encoder=enc)
    qs = [r["question"] for r in planted(7, 3, HELD_OUT).records]
    np.testing.assert_allclose(loaded.predict_proba(qs), scorer.predict_proba(qs), rtol=0, atol=1e-12)
    assert loaded.entries == scorer.entries and loaded.config == scorer.config
    np.testing.assert_array_equal(loaded.train_correct, scorer.train_correct)
    row = scorer.predict_proba(qs)[0]
    assert loaded.select(row, 4) == scorer.select(row, 4)
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["format"] == "polar-scorer"
    with pytest.raises(ValueError, match="other weights"):
        Scorer.load(tmp_path / "ck", encoder=BagOfWords(48))
    with pytest.raises(FileNotFoundError):
        Scorer.load(tmp_path / "nothing", encoder=enc)
    with pytest.raises(ValueError):
        scorer.select(row[:3], 2)


def test_search_cells_and_programs_outside_the_library():
    # A library without the program that the marker 'divide' needs; search results know it.
    lib = [e for e in ENTRIES if e.program != PROGRAMS[2]]
    train = planted(120, 0, FILLERS)
    train = SweepMatrix(train.records, lib, np.delete(train.correct, 2, axis=1), train.answers,
                        train.logprob_first, train.logprob_mean, train.new_tokens, train.settings)
    search = [{"question": r["question"], "final_valid_transitions": [list(PROGRAMS[2])] if "divide" in r["question"]
               else [], "final_invalid_transitions": [] if "divide" in r["question"] else [list(PROGRAMS[2])]}
              for r in train.records]
    search.append({"question": "a question only search saw", "final_valid_transitions": [[0, 1, 2]],
                   "final_invalid_transitions": []})
    scorer = train_scorer(train, None, {"encoder": "bow64"}, ScorerTrainConfig(epochs=60, val_fraction=0),
                          encoder=BagOfWords(), search_records=search, progress=False)
    assert scorer.metadata["training"]["n_programs"] == len(lib) - 1 + 2  # + two programs from search
    assert scorer.metadata["training"]["n_train"] == 121  # + the search-only question
    qs = ["please divide apple river stone cloud tiger", "please add apple river stone cloud tiger"]
    p = scorer.predict_proba_programs(qs, [PROGRAMS[2], PROGRAMS[1]])
    assert p.shape == (2, 2) and p[0, 0] > p[1, 0]
    assert scorer.predict_proba(qs).shape == (2, len(lib) - 1)


def test_program_features():
    f = program_features([0, 1, 1, 3], 4)
    np.testing.assert_array_equal(f[:4], [0, 0, 1, 0])  # layer 2 skipped
    np.testing.assert_array_equal(f[4:8], [1, 0, 0, 1])  # run once
    np.testing.assert_array_equal(f[8:12], [0, 1, 0, 0])  # extra runs
    assert f[12] == 1.0
    with pytest.raises(ValueError):
        program_features([0, 9], 4)


def _write_sweep(path, m: SweepMatrix) -> None:
    L = len(m.entries)
    records = [{**r, "texts": [""] * L, "answers": [None] * L, "correct": [int(c) for c in m.correct[i]],
                "logprob_first": [None] * L, "logprob_mean": [None] * L, "new_tokens": [0] * L}
               for i, r in enumerate(m.records)]
    write_sweep_file(path, m.entries, records, SETTINGS)


def test_llm_features_with_a_tiny_model(tmp_path):
    from polar.testing import tiny_model, tiny_tokenizer

    model, tok = tiny_model("llama", num_layers=4), tiny_tokenizer()
    prompts = ["w3 w4 w5 w6 w7 w8 w9", "w10 w11", "w12 w13 w14 w15"]
    feats = llm_features(model, tok, prompts, layers=[1, 2, 4], last_tokens=3, batch_size=3)
    assert feats.shape == (3, 2 * 3 * 64 + 2)
    alone = np.concatenate([llm_features(model, tok, [p], [1, 2, 4], 3) for p in prompts])
    np.testing.assert_allclose(feats, alone, atol=2e-5)  # left padding changes nothing
    # the last hidden state is the final-normed output; the last two numbers: top log-prob, entropy
    with torch.no_grad():
        logits = model(torch.tensor([tok(prompts[1])["input_ids"]])).logits[0, -1]
    logp = torch.log_softmax(logits, -1)
    assert feats[1, -2] == pytest.approx(float(logp.max()), abs=1e-4)
    assert feats[1, -1] == pytest.approx(float(-(logp.exp() * logp).sum()), abs=1e-4)
    cached = llm_features_cached(model, tok, prompts, [1, 2, 4], 3, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("llmfeat-*.npy"))) == 1
    np.testing.assert_allclose(llm_features_cached(model, tok, prompts, [1, 2, 4], 3, cache_dir=tmp_path), cached)
    with pytest.raises(ValueError):
        llm_features(model, tok, prompts, layers=[5])


def test_llm_features_scorer_from_files(tmp_path):
    from polar.testing import tiny_model, tiny_tokenizer

    model, tok = tiny_model("llama", num_layers=D), tiny_tokenizer()
    # questions in the tiny tokenizer's vocabulary; program j correct iff word w(10 + j) occurs
    def matrix(n, seed):
        rng = np.random.default_rng(seed)
        m = planted(n, seed, FILLERS)
        for i, r in enumerate(m.records):
            j = int(np.flatnonzero(m.correct[i, :6])[0])
            r["question"] = " ".join(f"w{int(w)}" for w in rng.integers(30, 120, size=4)) + f" w{10 + j}"
        return m
    train_path, val_path = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    _write_sweep(train_path, matrix(80, 0))
    _write_sweep(val_path, matrix(30, 1))
    scorer = train_scorer_from_files([train_path], tmp_path / "ck", val_sweep=[val_path], features="llm",
                                     config={"llm_last_tokens": 4, "d": 32},
                                     train_config=ScorerTrainConfig(epochs=80), model=model, tokenizer=tok,
                                     cache_dir=tmp_path / "cache", progress=False)
    assert scorer.encoder is None and scorer.config.features == "llm"
    assert scorer.config.llm_dim == 2 * len(scorer.config.layers()) * 64 + 2
    loaded = Scorer.load(tmp_path / "ck")
    val = read_sweep(val_path)
    from polar.predictor import sweep_prompts
    feats = loaded.compute_llm_features(model, tok, sweep_prompts(val, tok))
    proba = loaded.predict_proba([r["question"] for r in val.records], llm_features=feats)
    acc = float(val.correct[np.arange(len(proba)), proba.argmax(1)].mean())
    assert acc > 0.5  # far above chance (1/6): the LLM's last-token state carries the marker word
    with pytest.raises(ValueError, match="llm_features"):
        loaded.predict_proba(["w3"])


def test_polar_train_head_scorer_and_segments_on_sweeps(tmp_path, capsys):
    from polar import cli
    from polar.testing import save_tiny_model

    save_tiny_model(tmp_path / "tiny", num_layers=D)
    train, val = planted(24, 0, FILLERS), planted(8, 1, FILLERS)
    for m in (train, val):
        for i, r in enumerate(m.records):
            r["question"] = f"w{5 + i} w{10 + int(np.flatnonzero(m.correct[i, :6])[0])}"
    _write_sweep(tmp_path / "train.jsonl", train)
    _write_sweep(tmp_path / "val.jsonl", val)
    common = ["--sweep", str(tmp_path / "train.jsonl"), "--model", str(tmp_path / "tiny"), "--epochs", "3",
              "--threads", "1"]
    assert cli.main(["train", "--head", "scorer", "--features", "llm", "--val-sweep", str(tmp_path / "val.jsonl"),
                     "--out", str(tmp_path / "scorer"), *common]) == 0
    loaded = Scorer.load(tmp_path / "scorer")
    assert loaded.config.features == "llm" and len(loaded.entries) == 6
    choice = json.loads((tmp_path / "scorer" / "selection.json").read_text())  # select="auto" reads it
    assert choice["rule"] in ("top1", "vote", "gate") and choice["k"] == 5 and choice["val_problems"] == 8
    assert cli.main(["train", "--head", "segments", "--encoder", "llm", "--anti-original-lambda", "0.5",
                     "--lenpref-beta", "0.05", "--drop-full-if-shorter", "--out", str(tmp_path / "seg"), *common]) == 0
    cfg = json.loads((tmp_path / "seg" / "config.json").read_text())
    assert cfg["training"]["train_config"]["anti_original_lambda"] == 0.5
    capsys.readouterr()
    assert cli.main(["train", "--head", "scorer", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sweep" in err
    assert cli.main(["train", "--head", "scorer", "--deploy-k", "0", "--out", str(tmp_path / "x"), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--deploy-k" in err and not (tmp_path / "x").exists()


def test_the_shipped_default_is_a_scorer_with_its_rule_and_the_segment_predictor_beside_it():
    from polar import Predictor
    from polar.evaluation.solve import load_selection
    from polar.predictor._predictor import DEFAULT_CHECKPOINT, DEFAULT_SEGMENTS_CHECKPOINT

    if not (DEFAULT_CHECKPOINT / "config.json").is_file() or not (DEFAULT_SEGMENTS_CHECKPOINT / "config.json").is_file():
        pytest.skip("this checkout ships no predictor checkpoints")
    scorer = Predictor.load_default()
    assert isinstance(scorer, Scorer) and scorer.config.num_layers == 30 and not scorer.config.uses_llm
    assert load_selection(scorer.directory)["rule"] in ("top1", "vote", "gate")
    segments = Predictor.load_default(head="segments")
    assert isinstance(segments, Predictor) and segments.num_layers == 30
    with pytest.raises(ValueError, match="head"):
        Predictor.load_default(head="best")
    from polar.predictor import load_predictor  # by name or folder: the same checkpoints
    assert isinstance(load_predictor("default"), Scorer) and isinstance(load_predictor(DEFAULT_CHECKPOINT), Scorer)
    assert isinstance(load_predictor("default-segments"), Predictor)
    assert isinstance(load_predictor(DEFAULT_SEGMENTS_CHECKPOINT), Predictor)
