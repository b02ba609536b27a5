"""The scorer: ``P(program j is correct | input)`` for the programs of a library (docs/architecture.md section 12).

Trained with binary cross-entropy on a sweep's dense (problem x program) matrix, correct cells
and wrong cells alike, plus search results where given (their valid programs correct, their
invalid programs wrong; programs outside the library enter through their program embedding).
Sample entries of a sweep (temperature samples of the full program) are not programs to choose
and are left out. The network, top to bottom (``n`` inputs, ``M`` programs)::

    x = [pooled text vector (e) | LLM features]   standardised: (x - mean) / sqrt(var + mean(var))     [n, F]
    h = Linear(hidden, d) . dropout . gelu . Linear(F, hidden) . dropout (x)                      [n, d]
    u = program_features(pi)  (run counts per layer, 3 D + 1)                                     [M, 3D+1]
    g = Linear(hidden, d) . gelu . Linear(3D+1, hidden) (u)  (+ a learned vector per library entry) [M, d]
    b = Linear(3D+1, 1)(u)  (+ a learned bias per library entry)                                  [M]
    bilinear head: logit = h g^T / sqrt(d) + b;   mlp head: logit = gelu(h + g) w + b             [n, M]

Training starts from the static prior (each entry's bias the logit of its training rate; the
input side's last projection near zero), so an early-stopped model is at worst the lookup table.
Top-k: :meth:`Scorer.select` maximises the expected pass@k with the conditional rates of the
training matrix (:mod:`._selection`), which the checkpoint stores.

Checkpoint directory: ``model.safetensors`` (weights, feature mean/std, the training matrix as
uint8) and ``config.json`` (``{"format": "polar-scorer", "version": 1, "scorer": ScorerConfig,
"entries": [...], "encoder": {...}, ...metadata}``).

Example::

    scorer = train_scorer(read_sweep("L1_train.jsonl"), read_sweep("L1_validation.jsonl"))
    proba = scorer.predict_proba(["What is 5 + 4?"])           # [1, L]
    [scorer.entries[j].name for j in scorer.select(proba[0], k=5)]
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, UserFileNotFoundError
from ..jobs import write_atomic
from ..programs import full, validate_program
from ..tasks import Problem, build_prompt
from ..search import LibraryEntry, SweepMatrix, read_results, read_sweep
from ..search._library import library_from_json
from ._config import ScorerConfig, ScorerTrainConfig
from ._encoder import TextEncoder, load_encoder
from ._features import llm_features_cached, programs_features, text_features
from ._selection import CoValidity, pass_at_k, select_top_k, static_cover

logger = logging.getLogger(__name__)

SCORER_FORMAT = "polar-scorer"
SCORER_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


# ------------------------------------------------------------------------------------ network

class ScorerNet(nn.Module):
    """Logits ``[n, M]`` from input features ``x`` [n, F] and program features ``u`` [M, 3D+1]."""

    def __init__(self, cfg: ScorerConfig, in_dim: int, num_entries: int):
        super().__init__()
        self.cfg = cfg
        P = 3 * cfg.num_layers + 1
        self.register_buffer("x_mean", torch.zeros(in_dim))  # [F] training mean of the features
        self.register_buffer("x_std", torch.ones(in_dim))  # [F] sqrt(training variance + its mean over F)
        self.drop = nn.Dropout(cfg.dropout)
        self.inp_fc = nn.Linear(in_dim, cfg.hidden)
        self.inp_proj = nn.Linear(cfg.hidden, cfg.d)
        self.prog_fc = nn.Linear(P, cfg.hidden)
        self.prog_proj = nn.Linear(cfg.hidden, cfg.d)
        self.prog_bias = nn.Linear(P, 1)
        self.entry_vec = nn.Parameter(torch.zeros(num_entries, cfg.d)) if cfg.entry_embedding else None
        self.entry_bias = nn.Parameter(torch.zeros(num_entries)) if cfg.entry_embedding else None
        self.out = nn.Linear(cfg.d, 1, bias=False) if cfg.head == "mlp" else None
        nn.init.normal_(self.inp_proj.weight, std=0.02)  # the interaction starts small: the prior leads
        nn.init.zeros_(self.inp_proj.bias)
        nn.init.zeros_(self.prog_bias.weight)

    @torch.no_grad()
    def init_prior(self, rates: torch.Tensor) -> None:
        """Start from the static prior: entry ``j``'s bias is the logit of its training rate
        ``rates`` [L] (clipped to [0.01, 0.99]); without entry embeddings the shared bias is the
        logit of the mean rate."""
        logit = torch.logit(rates.clamp(0.01, 0.99))  # [L]
        if self.entry_bias is not None:
            self.entry_bias.copy_(logit)
        else:
            self.prog_bias.bias.fill_(float(torch.logit(rates.mean().clamp(0.01, 0.99))))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [n, F] raw features -> ``h`` [n, d]."""
        x = (x - self.x_mean) / self.x_std  # [n, F]
        return self.inp_proj(self.drop(F.gelu(self.inp_fc(self.drop(x)))))  # [n, d]

    def programs(self, u: torch.Tensor, entry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` [M, 3D+1], ``entry`` [M] long (library entry index, -1: none) -> ``(g [M, d], b [M])``."""
        g = self.prog_proj(F.gelu(self.prog_fc(u)))  # [M, d]
        b = self.prog_bias(u).squeeze(-1)  # [M]
        if self.entry_vec is not None:
            known = entry >= 0  # [M]
            idx = entry.clamp(min=0)  # [M]
            g = g + self.entry_vec[idx] * known[:, None]  # [M, d]
            b = b + self.entry_bias[idx] * known  # [M]
        return g, b

    def forward(self, x: torch.Tensor, u: torch.Tensor, entry: torch.Tensor) -> torch.Tensor:
        h = self.inputs(x)  # [n, d]
        g, b = self.programs(u, entry)  # [M, d], [M]
        if self.out is None:
            return h @ g.T / math.sqrt(self.cfg.d) + b  # [n, M]
        return self.out(F.gelu(h[:, None, :] + g[None, :, :])).squeeze(-1) + b  # [n, M]


# ------------------------------------------------------------------------------------ scorer

class Scorer:
    """A trained scorer: ``predict_proba`` for the library's program entries, ``select`` top-k.

    ``entries``: the library's program entries (columns of ``predict_proba``); ``train_correct``
    bool ``[n, L]``: the training matrix on them (co-failure statistics of :meth:`select`).
    ``encoder``: the frozen text encoder (needed when ``config.features`` uses text).
    """

    def __init__(self, config: ScorerConfig, entries: Sequence[LibraryEntry], net: ScorerNet,
                 train_correct: np.ndarray, encoder: TextEncoder | None = None, metadata: dict | None = None):
        if config.uses_text and encoder is None:
            raise ValueError(f"features {config.features!r} need the text encoder")
        self.config = config
        self.entries = list(entries)
        self.net = net.eval()
        self.encoder = encoder
        self.train_correct = np.asarray(train_correct).astype(bool)
        if self.train_correct.ndim != 2 or self.train_correct.shape[1] != len(self.entries):
            raise ValueError(f"train_correct must be [n, {len(self.entries)}], got {self.train_correct.shape}")
        self.covalidity = CoValidity(self.train_correct, config.smoothing)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._entry_u = torch.from_numpy(programs_features([e.program for e in self.entries], config.num_layers))
        self._entry_idx = torch.arange(len(self.entries))

    @property
    def programs(self) -> list[tuple[int, ...]]:
        return [e.program for e in self.entries]

    # ------------------------------------------------------------------------------- features

    def features(self, questions: Sequence[str], llm_features: np.ndarray | None = None) -> np.ndarray:
        """The network's input ``[n, F]``: the pooled text vector and/or the LLM features
        (``llm_features`` [n, llm_dim], from :meth:`compute_llm_features`; required when
        ``config.features`` uses "llm")."""
        if isinstance(questions, str):
            raise ValueError("questions must be a list of strings, not one string")
        questions = list(questions)
        parts = []
        if self.config.uses_text:
            parts.append(text_features(self.encoder, questions))
        if self.config.uses_llm:
            if llm_features is None:
                raise ValueError("this scorer uses LLM features: pass llm_features "
                                 "(Scorer.compute_llm_features(model, tokenizer, prompts))")
            llm_features = np.asarray(llm_features, dtype=np.float32)
            if llm_features.shape != (len(questions), self.config.llm_dim):
                raise ValueError(f"llm_features must be [{len(questions)}, {self.config.llm_dim}], "
                                 f"got {llm_features.shape}")
            parts.append(llm_features)
        return np.concatenate(parts, axis=1)

    def compute_llm_features(self, model, tokenizer, prompts: Sequence[str], cache_dir=None,
                             batch_size: int = 8) -> np.ndarray:
        """LLM features ``[n, llm_dim]`` of prompts built with ``config.prompt_style``
        (:func:`polar.tasks.build_prompt`) by the LLM the scorer was trained for."""
        return llm_features_cached(model, tokenizer, prompts, self.config.layers(), self.config.llm_last_tokens,
                                   cache_dir, batch_size)

    # ----------------------------------------------------------------------------- prediction

    @torch.no_grad()
    def proba_from_features(self, x: np.ndarray, programs: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """``[n, M]`` probabilities from input features ``x`` [n, F] for ``programs`` (default: the
        library entries; a program of the library also gets its entry's learned vector)."""
        if programs is None:
            u, idx = self._entry_u, self._entry_idx
        else:
            index = {e.program: j for j, e in enumerate(self.entries)}
            progs = [tuple(int(i) for i in p) for p in programs]
            u = torch.from_numpy(programs_features(progs, self.config.num_layers))
            idx = torch.tensor([index.get(p, -1) for p in progs], dtype=torch.long)
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        return torch.sigmoid(self.net(x, u, idx)).double().numpy()

    def predict_proba(self, questions: Sequence[str], llm_features: np.ndarray | None = None) -> np.ndarray:
        """``P(entry j correct | question)`` ``[n, L]`` float64 for the library's program entries."""
        return self.proba_from_features(self.features(questions, llm_features))

    def predict_proba_programs(self, questions: Sequence[str], programs: Sequence[Sequence[int]],
                               llm_features: np.ndarray | None = None) -> np.ndarray:
        """``P(program correct | question)`` ``[n, M]`` for any programs of the model's depth."""
        return self.proba_from_features(self.features(questions, llm_features), programs)

    def select(self, proba_row: Sequence[float], k: int, candidates: Sequence[int] | None = None,
               max_mean_layers: float | None | str = "full") -> list[int]:
        """``k`` entry indices maximising the expected pass@k for one input's probabilities ``[L]``
        (greedy with the training matrix's conditional rates; :func:`polar.predictor.select_top_k`).
        ``max_mean_layers``: the ``k`` programs run at most that many layers per candidate on
        average (``"full"``, the default: the model's depth, so they never cost more than ``k`` full
        programs, the deployable cost bound; ``None``: no bound)."""
        proba_row = np.asarray(proba_row, dtype=np.float64)
        if proba_row.shape != (len(self.entries),):
            raise ValueError(f"proba_row must have {len(self.entries)} entries, got shape {proba_row.shape}")
        bound = self.config.num_layers if max_mean_layers == "full" else max_mean_layers
        lengths = [len(e.program) for e in self.entries] if bound is not None else None
        return select_top_k(proba_row, k, self.train_correct, self.config.smoothing, candidates, lengths, bound)

    def rank(self, questions: Sequence[str], k: int, llm_features: np.ndarray | None = None) -> list[list[int]]:
        """:meth:`select` for every question."""
        return [self.select(row, k) for row in self.predict_proba(questions, llm_features)]

    # ---------------------------------------------------------------------------- checkpoints

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed)."""
        from safetensors.torch import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        state["train_correct"] = torch.from_numpy(self.train_correct.astype(np.uint8)).contiguous()
        write_atomic(directory / WEIGHTS_FILE, save(state, metadata={"format": SCORER_FORMAT}))
        body = {"format": SCORER_FORMAT, "version": SCORER_VERSION, "scorer": self.config.to_dict(),
                "in_dim": int(self.net.x_mean.numel()), "entries": [asdict(e) for e in self.entries],
                "encoder": None if self.encoder is None else
                {"spec": self.encoder.spec, "identity": self.encoder.identity(), "dim": self.encoder.dim},
                **self.metadata}
        write_atomic(directory / CONFIG_FILE, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, encoder: TextEncoder | None = None) -> "Scorer":
        """Load a directory written by :meth:`save`. The text encoder is rebuilt from its recorded
        spec unless given; ``ValueError`` for another format or an encoder with other weights,
        ``FileNotFoundError`` for a missing file."""
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise UserFileNotFoundError(f"{directory} is not a scorer checkpoint: no {name}")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        if meta.get("format") != SCORER_FORMAT or meta.get("version") != SCORER_VERSION:
            raise UserError(f"{directory / CONFIG_FILE}: not a {SCORER_FORMAT} v{SCORER_VERSION} checkpoint")
        config = ScorerConfig.from_dict(meta.pop("scorer"))
        entries = library_from_json(meta.pop("entries"))
        enc_meta, in_dim = meta.pop("encoder"), meta.pop("in_dim")
        meta.pop("format"), meta.pop("version")
        if config.uses_text:
            if encoder is None:
                encoder = load_encoder(config.encoder, max_tokens=config.encoder_max_tokens)
            recorded = enc_meta["identity"].rsplit(":", 1)[-1]
            if encoder.identity().rsplit(":", 1)[-1] != recorded:
                raise UserError(f"{directory} was trained with encoder {enc_meta['identity']}; the encoder given "
                                 f"is {encoder.identity()} (other weights)")
        state = load_file(str(directory / WEIGHTS_FILE))
        net = ScorerNet(config, in_dim, len(entries))
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        scorer = cls(config, entries, net, state["train_correct"].numpy().astype(bool), encoder, meta)
        scorer.directory = directory  # where selection.json lies (polar.solve(select="auto"))
        return scorer


def is_scorer_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a scorer checkpoint (its ``config.json`` says format
    ``polar-scorer``); :class:`polar.UserError` for a ``config.json`` that is not JSON."""
    config = Path(directory) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{config} is not a checkpoint's config.json: {err}") from None
    return isinstance(meta, dict) and meta.get("format") == SCORER_FORMAT


# ------------------------------------------------------------------------------------ training data

def program_columns(matrix: SweepMatrix) -> list[int]:
    """Columns of ``matrix`` that are programs (sample entries left out), in library order."""
    return [j for j, e in enumerate(matrix.entries) if not e.is_sample]


def _cells_from_search(records: Sequence[dict], num_layers: int) -> dict[str, dict[tuple[int, ...], float]]:
    """``question -> {program: 1.0 valid / 0.0 invalid}`` from search result records (valid wins)."""
    out: dict[str, dict[tuple[int, ...], float]] = {}
    for rec in records:
        q = rec.get("question")
        if not isinstance(q, str) or rec.get("failed"):
            continue
        cells = out.setdefault(q, {})
        lists = [(rec.get("final_invalid_transitions") or [], 0.0), (rec.get("final_valid_transitions") or [], 1.0)]
        score = rec.get("initial_score")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            lists.append(([list(full(num_layers))], 1.0 if score == 1 else 0.0))
        for programs, y in lists:
            for p in programs:
                try:
                    key = tuple(validate_program(list(p), num_layers, max_length=8 * num_layers))
                except (ValueError, TypeError):
                    continue
                cells[key] = max(cells.get(key, 0.0), y)
    return out


def _split(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    n_val = int(fraction * len(ids))
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).hexdigest())
    return sorted(order[n_val:]), sorted(order[:n_val])


def _metrics(proba: np.ndarray, correct: np.ndarray, train_correct: np.ndarray, k: int, smoothing: float) -> dict:
    """Top-1 and pass@k (greedy expected-pass@k and independent argmaxes) of probabilities on a
    matrix, beside the best static set (cover of the training matrix) and the library oracle."""
    static = static_cover(train_correct, k)
    greedy = [select_top_k(row, k, train_correct, smoothing) for row in proba]
    argmax = [list(np.argsort(-row, kind="stable")[:k]) for row in proba]
    return {"n": int(correct.shape[0]), "top1": pass_at_k(correct, [a[:1] for a in argmax]),
            f"pass@{k}": pass_at_k(correct, greedy), f"pass@{k}_independent": pass_at_k(correct, argmax),
            "static_top1": pass_at_k(correct, [static[:1]] * len(correct)),
            f"static_pass@{k}": pass_at_k(correct, [static] * len(correct)),
            "oracle": float(correct.any(axis=1).mean()) if len(correct) else float("nan")}


def train_scorer(matrix_train: SweepMatrix, matrix_val: SweepMatrix | None = None,
                 config: ScorerConfig | dict | None = None, train_config: ScorerTrainConfig | None = None, *,
                 encoder: TextEncoder | None = None, llm_features_train: np.ndarray | None = None,
                 llm_features_val: np.ndarray | None = None, search_records: Sequence[dict] = (),
                 seed: int = 0, cache_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> Scorer:
    """Train a :class:`Scorer` on a sweep matrix (its program entries) and return the best epoch's
    model by validation ``select_by`` (``matrix_val``, else a hashed ``val_fraction`` of the
    training problems; none: the last epoch).

    ``config``: a :class:`ScorerConfig` or a dict of its fields (``num_layers`` defaults to the
    matrix's depth). ``encoder``: the text encoder (default: built from ``config.encoder``).
    ``llm_features_*``: ``[P, llm_dim]`` rows aligned with the matrices (required for "llm"
    features; compute with :func:`polar.predictor.llm_features`). ``search_records``: raw search
    result records: their cells fill the training rows of the same question, and (text features
    only) add rows of their own. ``out_dir``: where the checkpoint is written. ``metadata['validation']``
    holds top-1 and pass@k on the validation problems, with the static set and the oracle.
    Raises ``ValueError`` when the matrix has no program entries or the inputs do not line up.
    """
    tc = train_config or ScorerTrainConfig()
    cols = program_columns(matrix_train)
    if not cols:
        raise ValueError("the sweep has no program entries (only samples)")
    entries = [matrix_train.entries[j] for j in cols]
    D = int(matrix_train.records[0].get("num_layers") or 1 + max(max(e.program) for e in entries))
    fields = dict(config.to_dict()) if isinstance(config, ScorerConfig) else dict(config or {})
    fields.setdefault("num_layers", D)
    fields.setdefault("llm_name", matrix_train.settings.get("model"))
    fields.setdefault("prompt_style", matrix_train.settings.get("prompt_style") or "fewshot")
    cfg = ScorerConfig.from_dict(fields)
    if cfg.num_layers != D:
        raise ValueError(f"config.num_layers is {cfg.num_layers} but the sweep's model has {D} layers")
    if matrix_val is not None and [matrix_val.entries[j] for j in program_columns(matrix_val)] != entries:
        raise ValueError("the validation sweep has another library than the training sweep")
    if cfg.uses_text and encoder is None:
        encoder = load_encoder(cfg.encoder, max_tokens=cfg.encoder_max_tokens)
    if cfg.uses_text:
        cfg = replace(cfg, text_dim=encoder.dim)

    # Rows: the sweep's problems (all program cells known), then search-only questions.
    questions = [str(r["question"]) for r in matrix_train.records]
    y = matrix_train.correct[:, cols].astype(np.float32)  # [P, L]
    known = np.ones_like(y, dtype=bool)  # [P, L]
    weight = np.ones_like(y)  # [P, L]
    programs = [e.program for e in entries]
    search_cells = _cells_from_search(search_records, D) if search_records else {}
    if search_cells:
        col_of = {p: j for j, p in enumerate(programs)}
        extra = sorted({p for cells in search_cells.values() for p in cells if p not in col_of})
        for p in extra:
            col_of[p] = len(programs)
            programs.append(p)
        row_of = {q: i for i, q in enumerate(questions)}
        new_q = [q for q in search_cells if q not in row_of] if not cfg.uses_llm else []
        P, M = len(questions) + len(new_q), len(programs)
        y2, known2, w2 = np.zeros((P, M), np.float32), np.zeros((P, M), bool), np.zeros((P, M), np.float32)
        y2[: len(questions), : len(cols)], known2[: len(questions), : len(cols)] = y, known
        w2[: len(questions), : len(cols)] = 1.0
        for q in new_q:
            row_of[q] = len(questions)
            questions.append(q)
        for q, cells in search_cells.items():
            if q not in row_of:
                continue
            i = row_of[q]
            for p, v in cells.items():
                j = col_of[p]
                if not known2[i, j]:
                    y2[i, j], known2[i, j], w2[i, j] = v, True, tc.search_weight
        y, known, weight = y2, known2, w2
        logger.info("search results: %d questions (%d new rows), %d programs outside the library",
                    len(search_cells), len(new_q), len(extra))

    def inputs(matrix_questions: list[str], llm: np.ndarray | None, rows: int) -> np.ndarray:
        parts = []
        if cfg.uses_text:
            parts.append(text_features(encoder, matrix_questions, cache_dir, tc.encode_batch_size, progress))
        if cfg.uses_llm:
            if llm is None or np.asarray(llm).shape[0] != rows:
                raise ValueError(f"features {cfg.features!r} need LLM features with one row per problem ({rows})")
            parts.append(np.asarray(llm, dtype=np.float32))
        return np.concatenate(parts, axis=1)

    x = inputs(questions, llm_features_train, len(matrix_train.records))  # [P, F]
    if cfg.uses_llm:
        cfg = replace(cfg, llm_dim=int(np.asarray(llm_features_train).shape[1]))
    sweep_rows = len(matrix_train.records)
    train_rows, sweep_train = list(range(len(questions))), list(range(sweep_rows))
    val_x = val_y = None
    if matrix_val is not None:
        val_x = inputs([str(r["question"]) for r in matrix_val.records], llm_features_val, len(matrix_val.records))
        val_y = matrix_val.correct[:, program_columns(matrix_val)].astype(bool)
    elif tc.val_fraction > 0:
        tr, va = _split([str(r["id"]) for r in matrix_train.records], tc.val_fraction, seed)
        if va:  # whole problems held out; search-only rows always train
            sweep_train, train_rows = tr, tr + list(range(sweep_rows, len(questions)))
            val_x, val_y = x[va], matrix_train.correct[va][:, cols].astype(bool)
    train_correct = matrix_train.correct[sweep_train][:, cols].astype(bool)  # co-failures: training rows only

    torch.manual_seed(seed)
    net = ScorerNet(cfg, x.shape[1], len(entries))
    xt = torch.from_numpy(x[train_rows])
    net.x_mean.copy_(xt.mean(0))
    var = xt.var(0, unbiased=False)  # [F]; plus the mean variance, so that a feature (nearly)
    net.x_std.copy_((var + var.mean() + 1e-12).sqrt())  # constant in training is not blown up later
    net.init_prior(torch.from_numpy(train_correct.mean(axis=0)).float())
    u = torch.from_numpy(programs_features(programs, D))  # [M, 3D+1]
    entry_idx = torch.tensor([j if j < len(entries) else -1 for j in range(len(programs))], dtype=torch.long)
    Y = torch.from_numpy(y[train_rows])
    K = torch.from_numpy(known[train_rows]).float()
    W = torch.from_numpy(weight[train_rows]) * K * torch.where(Y > 0, tc.pos_weight, 1.0)
    decay = [p for p in net.parameters() if p.dim() >= 2]
    rest = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=tc.lr)
    n_train = len(train_rows)
    steps_per_epoch = math.ceil(n_train / tc.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps_per_epoch))
    gen = torch.Generator().manual_seed(seed)
    vx = None if val_x is None else torch.from_numpy(val_x)
    u_lib, idx_lib = u[: len(entries)], entry_idx[: len(entries)]
    best: dict | None = None
    best_state = None
    history: list[dict] = []
    stale = 0
    from tqdm.auto import tqdm

    bar = tqdm(range(tc.epochs), desc="training scorer", unit="epoch", disable=not progress)
    for epoch in bar:
        net.train()
        total, count = 0.0, 0.0
        for batch in torch.randperm(n_train, generator=gen).split(tc.batch_size):
            logits = net(xt[batch], u, entry_idx)  # [b, M]
            w = W[batch]  # [b, M]
            loss = (F.binary_cross_entropy_with_logits(logits, Y[batch], reduction="none") * w).sum() / w.sum().clamp(min=1e-9)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(batch)
            count += len(batch)
        entry = {"epoch": epoch, "train_loss": total / max(count, 1)}
        if vx is not None:
            net.eval()
            with torch.no_grad():
                vlogits = net(vx, u_lib, idx_lib)  # [V, L]
                vt = torch.from_numpy(val_y.astype(np.float32))
                entry["val_loss"] = float(F.binary_cross_entropy_with_logits(vlogits, vt))
                top = vlogits.argmax(-1).numpy()
                entry["val_top1"] = float(val_y[np.arange(len(top)), top].mean())
        history.append(entry)
        key = None if vx is None else (-entry["val_loss"] if tc.select_by == "loss" else (entry["val_top1"], -entry["val_loss"]))
        if best is None or key is None or key > best["key"]:
            best, best_state, stale = {"key": key, **entry}, copy.deepcopy(net.state_dict()), 0
        else:
            stale += 1
        bar.set_postfix({k: f"{v:.4f}" for k, v in entry.items() if k != "epoch"})
        if tc.patience and stale >= tc.patience:
            break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    best.pop("key")
    metadata: dict[str, Any] = {"training": {
        "seed": seed, "train_config": tc.to_dict(), "best": best, "history": history,
        "n_train": n_train, "n_val": 0 if val_y is None else int(len(val_y)),
        "n_programs": len(programs), "n_search_cells": int(known.sum() - known[:, : len(entries)][:sweep_rows].sum())
        if search_cells else 0, "sweep_settings": matrix_train.settings}}
    scorer = Scorer(cfg, entries, net, train_correct, encoder, metadata)
    if val_x is not None:
        proba = scorer.proba_from_features(val_x)
        scorer.metadata["validation"] = _metrics(proba, val_y, train_correct, tc.k, cfg.smoothing)
    if out_dir is not None:
        scorer.save(out_dir)
    return scorer


def sweep_prompts(matrix: SweepMatrix, tokenizer=None, prompt_style: str | None = None) -> list[str]:
    """The prompt of every problem of a sweep, as the sweep built it (its ``prompt_style``)."""
    style = prompt_style or matrix.settings.get("prompt_style") or "fewshot"
    return [build_prompt(Problem(str(r["id"]), str(r["question"]), str(r.get("gt_ans", "")), str(r.get("source", "")),
                                 r.get("level"), r.get("choices")), style, tokenizer) for r in matrix.records]


def train_scorer_from_files(sweep: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                            val_sweep: Sequence[str | os.PathLike] = (), search: Sequence[str | os.PathLike] = (),
                            features: str = "text", config: ScorerConfig | dict | None = None,
                            train_config: ScorerTrainConfig | None = None, model=None, tokenizer=None,
                            encoder: TextEncoder | None = None, seed: int = 0,
                            cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Scorer:
    """:func:`train_scorer` on sweep files (``polar sweep``; one library), optional validation
    sweep files and search results files; the checkpoint goes to ``out_dir``.

    ``features``: "text", "llm" or "text+llm"; the LLM ones need ``model`` and ``tokenizer`` (the
    sweep's model), run once per problem on the sweep's prompts and cached in ``cache_dir``.
    """
    fields = dict(config.to_dict()) if isinstance(config, ScorerConfig) else dict(config or {})
    fields["features"] = features
    train_m = read_sweep(list(sweep))
    val_m = read_sweep(list(val_sweep)) if val_sweep else None
    records = read_results(list(search), same_settings=False) if search else []
    llm_tr = llm_va = None
    if "llm" in features.split("+"):
        if model is None or tokenizer is None:
            raise ValueError("--features llm needs the sweep's model and tokenizer")
        probe = ScorerConfig.from_dict({"num_layers": model.config.num_hidden_layers,
                                        **{k: v for k, v in fields.items() if k != "num_layers"}})
        layers, last = probe.layers(), probe.llm_last_tokens
        llm_tr = llm_features_cached(model, tokenizer, sweep_prompts(train_m, tokenizer), layers, last, cache_dir,
                                     progress=progress)
        if val_m is not None:
            llm_va = llm_features_cached(model, tokenizer, sweep_prompts(val_m, tokenizer), layers, last, cache_dir,
                                         progress=progress)
    scorer = train_scorer(train_m, val_m, fields, train_config, encoder=encoder, llm_features_train=llm_tr,
                          llm_features_val=llm_va, search_records=records, seed=seed, cache_dir=cache_dir,
                          progress=progress)
    scorer.metadata.setdefault("training", {})["data_files"] = {
        "sweep": [str(p) for p in sweep], "val_sweep": [str(p) for p in val_sweep], "search": [str(p) for p in search]}
    scorer.save(out_dir)
    return scorer


__all__ = ["Scorer", "ScorerNet", "is_scorer_checkpoint", "program_columns", "sweep_prompts", "train_scorer", "train_scorer_from_files"]
