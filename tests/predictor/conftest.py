"""Tiny encoders, configs and hand-made supervision for the predictor tests.

Tests reach these helpers through the ``toy`` fixture (this module), since the suite runs with
``--import-mode=importlib`` (test folders are not importable packages).
"""
from __future__ import annotations

import json
import sys
import zlib

import pytest
import torch
from torch import nn

from polar.predictor import EmbeddingEncoder, PredictorConfig, SearchRecord

torch.set_num_threads(1)

D = 6
K_MAX = 3
SKIP_PROGRAM = (0, 1, 3, 4, 5)  # layer 2 skipped
REPEAT_PROGRAM = (0, 1, 2, 3, 2, 3, 4, 5)  # layers 2..3 run twice
FILLERS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "chair", "piano", "grass", "ocean",
           "candle", "rocket", "silver", "garden", "window", "pencil", "forest", "castle", "bridge", "violet"]
HELD_OUT_FILLERS = ["marble", "comet", "saddle", "tunnel", "meadow"]


class ToyTokenizer:
    """Whitespace tokenizer with hashed ids in 1..vocab-1 (HF-style call: texts -> {"input_ids"})."""

    def __init__(self, vocab: int = 512):
        self.vocab = vocab

    def __call__(self, texts):
        return {"input_ids": [[1 + zlib.crc32(w.encode()) % (self.vocab - 1) for w in t.split()] for t in texts]}


def toy_llm_encoder(seed: int = 0, dim: int = 16, vocab: int = 512) -> EmbeddingEncoder:
    torch.manual_seed(seed)
    return EmbeddingEncoder(nn.Embedding(vocab, dim), ToyTokenizer(vocab), name="toy-llm")


def tiny_config(**overrides) -> PredictorConfig:
    fields = dict(num_layers=D, k_max=K_MAX, llm_name="toy-llm", encoder="llm", d=32, n_blocks=1, n_heads=2,
                  dropout=0.0, encoder_max_tokens=32)
    fields.update(overrides)
    return PredictorConfig(**fields)


def family_question(family: str, i: int, fillers=FILLERS) -> str:
    a, b = fillers[i % len(fillers)], fillers[(3 * i + 1) % len(fillers)]
    verb = "skip" if family == "skip" else "compute"
    return f"please {verb} the {a} and the {b} now" if i % 2 else f"{a} {b} : {verb} it"


def family_records(n: int, fillers=FILLERS, prefix: str = "p") -> list[SearchRecord]:
    """Half the questions contain 'skip' (valid: the skip program, plus the full program for some:
    weighted down), half 'compute' (valid: the repeat program)."""
    records = []
    for i in range(n):
        family = "skip" if i % 2 == 0 else "compute"
        if family == "skip":
            valid = (SKIP_PROGRAM, tuple(range(D))) if i % 4 == 0 else (SKIP_PROGRAM,)
            score = 1.0 if i % 4 == 0 else 0.0
        else:
            valid, score = (REPEAT_PROGRAM,), 0.0
        records.append(SearchRecord(f"{prefix}{i}", family_question(family, i // 2, fillers), valid, score))
    return records


def write_results(path, records, settings=None) -> None:
    with open(path, "w") as f:
        for r in records:
            rec = {"id": r.id, "question": r.question, "gt_ans": "1", "initial_score": r.initial_score,
                   "final_valid_transitions": [list(p) for p in r.valid_programs],
                   "final_invalid_transitions": [], "level": 1}
            if settings is not None:
                rec["settings"] = settings
            f.write(json.dumps(rec) + "\n")


@pytest.fixture(scope="session")
def toy():
    """This module: constants and helpers (``toy.D``, ``toy.tiny_config()``, ``toy.family_records(n)``)."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A random-init 1-layer BERT with a word-level vocabulary, saved as an AutoModel folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted(set(" ".join(family_question(f, i, FILLERS + HELD_OUT_FILLERS) for f in ("skip", "compute")
                                for i in range(40)).split()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(folder))
    return folder
