"""The learnability study (``polar analyze-sweep``): can anything about the input tell which program works?

Search says programs that fix a problem exist for most problems; a predictor is only useful if
something it can see *before* running them says which ones. The sweep matrices (a dense
(problem x library program) grade matrix per split, :func:`polar.search.read_sweep`) answer that
without training a network per question: every selector below ranks the library's programs for a
test problem, and its pass@k is read off the test matrix (no generation).

Selectors (all rank the *program* entries of the library; orders are nested, so pass@k for
k = 1..k_max comes from one order per problem):

- ``oracle``: some library program is correct (an upper bound: needs the gold answer);
- ``base greedy``: the full program (pass@1 only);
- ``static``: best static, ``k`` programs chosen greedily to cover the most training problems (a
  set cover on the pooled training matrix, :func:`polar.predictor._selection.static_cover`), the
  same for every input: the strongest input-independent baseline;
- ``static (family)``: the same cover on the family's own training problems (knows the family of
  the input, nothing else about it; absent for families without training problems);
- ``random edit``: ``k`` distinct single edits (skip or repeat one block) drawn uniformly: the exact
  expectation over draws, ``1 - C(N - c, k) / C(N, k)`` (no seed needed);
- ``nn (rank)`` / ``nn (cover)``: the ``K`` training problems nearest to the question (cosine of the
  mean-pooled MiniLM embedding), their programs ranked by validity rate among the neighbours (ties
  by the pooled training rate) or chosen by expected pass@k on the neighbours' rows
  (:func:`polar.predictor._selection.select_top_k`, i.e. a set cover of the neighbours); ``K``
  chosen on the validation split when one is given;
- ``scorer (text)`` / ``scorer (llm)``: trained scorers given by the caller
  (``predict_proba``/``select``);
- ``T=0.3`` / ``T=0.7`` / ``T=1.0``: base sampling, pass@k over the first ``k`` of the samples of the
  same problems (the samples sweep);
- ``mix: <selector> + samples`` (with validation samples, for ``static`` and the text scorer): the
  selector's first ``m`` programs, then temperature-``T`` samples of the full program; ``m`` and ``T``
  chosen on the validation split by pass@``deploy_k`` (ties: fewer programs). Its lift is reported
  over best static and over the static mix (what the input adds once samples are in), apart from
  the learned selectors' (a mix is not an input feature).

For each learned selector (nn, scorers) the lift of pass@k over best static is given with a
paired bootstrap 95% interval (problems resampled; the average over families resamples each
family apart), and per program the AUC of its predicted score against the truth within a family
(a program whose score does not depend on the input has AUC 0.5; the summary says how far the
learned scores get above that).

Cost: *layer-token applications* per problem. The full program's prefill of the prompt is paid
once (``D * T``; it is shared by every candidate, and it is what the LLM features and the gate
read); a program candidate ``pi`` then pays a new prefill from its first step that differs from
the full program, ``(len(pi) - s(pi)) * T``, plus its decoding, ``len(pi) * g``; a temperature
sample pays only decoding, ``D * g``. ``T``: the prompt's tokens after the few-shot shots shared by
every prompt (a deployed system keeps the shots' states per program prefix, as
:class:`polar.runtime.PrefixCache` does), from the model's tokenizer when it can be loaded (else
``len(question) / 4``, recorded in the summary); ``g``: the sweep's ``new_tokens`` of that cell.
Costs are reported relative to base greedy's (``D * T + D * g_full``), so pass@k can be compared
at equal compute.

Deployable answers (answer@k, no gold answer): ``top1``, ``vote`` (majority of the k answers, ties
by score) and ``gate`` (the full program unless its first-answer-token log-probability is below a
threshold, then the best-scored other) of every selector, the gate's threshold and the ``auto``
rule chosen on the validation split (:func:`polar.evaluation.solve.choose_rule`); and majority
vote over the first k samples.

Outputs in ``out``: ``findings.md`` (tables and the verdict, computed from the numbers),
``summary.json`` (everything, per family and k), ``pass_at_k.png``, ``pass_vs_compute.png``,
``lift.png``.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_int
from ..errors import UserError, UserFileNotFoundError
from ..models import DEFAULT_MODEL_DIRNAME, cache_root
from ..predictor._encoder import load_encoder
from ..predictor._selection import select_top_k, static_cover
from ..runtime import common_prefix
from ..search._sweep import SweepMatrix, read_sweep
from ..tasks import Problem, build_prompt
from .metrics import answer_correct, majority_answer
from .solve import choose_rule, full_column, gate_correct, rule_answers

logger = logging.getLogger(__name__)

#: Families in the order tables list them (others follow, sorted).
FAMILY_ORDER = ("L1", "L2", "L3", "L4", "L5", "words", "gsm8k", "mawps", "asdiv")
#: In-distribution families: the average over these is the study's headline.
IN_DISTRIBUTION = ("L1", "L2", "L3", "L4", "L5", "words")
#: Neighbour counts tried on the validation split.
NEIGHBOUR_CHOICES = (5, 10, 20, 40)
DEFAULT_NEIGHBOURS = 20
TEMPERATURES = (0.3, 0.7, 1.0)
#: Selectors whose programs are mixed with samples (with validation samples).
MIX_BASES = ("static", "scorer (text)")


def family_of(record: dict) -> str:
    """A record's family: ``L<level>`` for synthetic problems, else its source (``words``, ``gsm8k``...)."""
    if record.get("source") == "synthetic" and record.get("level") is not None:
        return f"L{record['level']}"
    return str(record.get("source") or "unknown")


def _family_sort(names) -> list[str]:
    return sorted(names, key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f))


# ----------------------------------------------------------------------------- pass@k


def pass_curve(correct: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """``[P, K]`` bool: row ``i``, column ``k-1``: one of the first ``k`` columns of ``orders[i]`` is
    correct. ``correct`` bool ``[P, L]``, ``orders`` int ``[P, K]`` (column indices; -1 = none)."""
    orders = np.asarray(orders)
    P, K = orders.shape
    hit = np.zeros((P, K), dtype=bool)
    rows = np.arange(P)
    for k in range(K):
        col = orders[:, k]
        hit[:, k] = np.where(col >= 0, correct[rows, np.maximum(col, 0)], False)
    return np.logical_or.accumulate(hit, axis=1)


def sample_pass_curve(correct: np.ndarray, k_max: int) -> np.ndarray:
    """``[P, k_max]`` bool: one of the first ``k`` samples (columns, in sample order) is correct."""
    correct = np.asarray(correct, dtype=bool)
    if correct.shape[1] < k_max:
        raise ValueError(f"{correct.shape[1]} samples per problem, fewer than k_max = {k_max}")
    return np.logical_or.accumulate(correct[:, :k_max], axis=1)


def random_pass_curve(correct: np.ndarray, columns: Sequence[int], k_max: int) -> np.ndarray:
    """``[P, k_max]`` float: the expected pass@k of ``k`` distinct columns drawn uniformly from
    ``columns``: ``1 - C(N - c, k) / C(N, k)`` with ``c`` the correct ones of the row."""
    columns = list(columns)
    N = len(columns)
    if N == 0:
        raise ValueError("no columns to draw from")
    c = np.asarray(correct, dtype=bool)[:, columns].sum(axis=1)  # [P]
    out = np.zeros((len(c), k_max))
    for k in range(1, k_max + 1):
        if k > N:
            out[:, k - 1] = (c > 0).astype(float)
            continue
        out[:, k - 1] = [1.0 - (math.comb(N - ci, k) / math.comb(N, k)) for ci in c]
    return out


def mix_pass_curve(program_curve: np.ndarray, sample_curve: np.ndarray, m: int, k_max: int) -> np.ndarray:
    """``[P, k_max]`` bool: pass@k of ``m`` programs (``program_curve`` ``[P, >= m]``, nested) followed by
    samples (``sample_curve`` ``[P, >= k_max - m]``, nested): the programs' pass@k up to ``k = m``, then
    the first ``m`` programs or one of the first ``k - m`` samples."""
    if not 0 <= m <= k_max:
        raise ValueError(f"m = {m} programs outside 0..k_max = {k_max}")
    P = program_curve.shape[0]
    out = np.zeros((P, k_max), dtype=bool)
    out[:, :m] = program_curve[:, :m]
    prog = program_curve[:, m - 1] if m else np.zeros(P, dtype=bool)
    for k in range(m, k_max):
        out[:, k] = prog | sample_curve[:, k - m]
    return out


def choose_mix(program_curve: np.ndarray, sample_curves: dict, k: int) -> dict:
    """The ``(m programs, temperature)`` with the best mean pass@``k`` of :func:`mix_pass_curve` on
    validation rows (ties: fewer programs, then the lower temperature). ``sample_curves``:
    ``{T: [P, >= k] bool}``. Returns ``{"m", "temperature", "pass", "grid": {"m/T": pass}}``."""
    grid, best = {}, None
    for m in range(k + 1):
        for t in sorted(sample_curves):
            v = float(mix_pass_curve(program_curve, sample_curves[t], m, k)[:, k - 1].mean())
            grid[f"{m}/{t:g}"] = v
            if best is None or v > best[0] + 1e-12:
                best = (v, m, t)
    if best is None:
        raise ValueError("no sample temperature to mix with")
    return {"m": best[1], "temperature": best[2], "pass": best[0], "grid": grid}


def bootstrap_ci(diffs: np.ndarray | Sequence[np.ndarray], n: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """``(estimate, lo, hi)``: the mean of per-problem ``diffs`` and its percentile bootstrap
    interval (problems resampled with replacement). A list of arrays is a stratified sample: the
    estimate is the mean of the arrays' means (each array resampled apart)."""
    strata = [np.asarray(diffs, dtype=float)] if isinstance(diffs, np.ndarray) else [np.asarray(d, float) for d in diffs]
    strata = [s for s in strata if s.size]
    if not strata:
        return float("nan"), float("nan"), float("nan")
    check_int(n, "n")
    rng = np.random.default_rng(seed)
    estimate = float(np.mean([s.mean() for s in strata]))
    draws = np.zeros(n)
    for s in strata:
        idx = rng.integers(0, s.size, size=(n, s.size))
        draws += s[idx].mean(axis=1)
    draws /= len(strata)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return estimate, float(min(lo, estimate)), float(max(hi, estimate))


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the positives of ``truth`` (ties count half);
    NaN when one class is empty."""
    scores = np.asarray(scores, dtype=float)
    truth = np.asarray(truth, dtype=bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[truth].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


# ----------------------------------------------------------------------------- selectors


@dataclass
class Ranking:
    """One selector's candidates on the rows of a matrix: ``orders`` int ``[P, K]`` (matrix
    columns, best first) and ``scores`` float ``[P, L]`` (higher = more likely correct; NaN for
    columns it cannot choose), or ``None`` for selectors without per-input scores."""

    name: str
    orders: np.ndarray
    scores: np.ndarray | None
    learned: bool = False


def program_columns(matrix: SweepMatrix) -> list[int]:
    """The greedy program entries of a library (temperature samples excluded)."""
    return [j for j, e in enumerate(matrix.entries) if e.temperature is None]


def single_edit_columns(matrix: SweepMatrix) -> list[int]:
    """Entries named as single edits by :func:`polar.search._library.single_edits`."""
    return [j for j, e in enumerate(matrix.entries)
            if e.temperature is None and (e.name.startswith("skip ") or e.name.startswith("repeat "))]


def static_order(train_correct: np.ndarray, columns: Sequence[int], k_max: int) -> list[int]:
    """Best static: the greedy cover of the training rows by ``columns`` (matrix indices)."""
    return static_cover(train_correct, k_max, candidates=list(columns))


def embed_mean(questions: Sequence[str], encoder=None, batch_size: int = 64) -> np.ndarray:
    """``[n, e]`` unit vectors: mean-pooled token vectors of a :class:`polar.predictor.TextEncoder`
    (default MiniLM)."""
    encoder = encoder or load_encoder("minilm")
    out = []
    for s in range(0, len(questions), batch_size):
        hidden, mask = encoder.encode(list(questions[s:s + batch_size]))  # [b, T, e], [b, T]
        m = mask.to(hidden.dtype).unsqueeze(-1)  # [b, T, 1]
        out.append(((hidden * m).sum(1) / m.sum(1).clamp_min(1.0)).cpu().numpy())  # [b, e]
    if not out:
        return np.zeros((0, getattr(encoder, "dim", 1)))
    emb = np.concatenate(out).astype(np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def nn_rankings(train_emb: np.ndarray, train_correct: np.ndarray, test_emb: np.ndarray, columns: Sequence[int],
                k_max: int, neighbours: int, L: int) -> tuple[Ranking, Ranking]:
    """``(nn (rank), nn (cover))`` for the test rows: the ``neighbours`` nearest training rows by
    cosine (unit vectors in), their programs' validity rates (ties by the pooled training rate)."""
    columns = list(columns)
    K = min(neighbours, train_emb.shape[0])
    sims = test_emb @ train_emb.T  # [P, N]
    near = np.argsort(-sims, axis=1, kind="stable")[:, :K]  # [P, K]
    base_rate = train_correct[:, columns].mean(axis=0)  # [C]
    P = test_emb.shape[0]
    kk = min(k_max, len(columns))
    rank_orders = np.full((P, k_max), -1, dtype=int)
    cover_orders = np.full((P, k_max), -1, dtype=int)
    scores = np.full((P, L), np.nan)
    for i in range(P):
        sub = train_correct[near[i]][:, columns]  # [K, C]
        rate = sub.mean(axis=0)  # [C]
        score = rate + 1e-6 * base_rate  # pooled rate breaks ties
        scores[i, columns] = rate
        top = np.argsort(-score, kind="stable")[:kk]
        rank_orders[i, :kk] = [columns[j] for j in top]
        picks = select_top_k(np.clip(score, 0.0, 1.0), kk, train_correct=sub, smoothing=0.0)
        cover_orders[i, :len(picks)] = [columns[j] for j in picks]
    return (Ranking("nn (rank)", rank_orders, scores, True), Ranking("nn (cover)", cover_orders, scores.copy(), True))


def scorer_ranking(name: str, scorer, matrix: SweepMatrix, k_max: int, llm_features=None) -> Ranking:
    """A trained scorer's candidates on the rows of ``matrix`` (its library mapped to the matrix's
    columns by program; scorer programs missing from the matrix are never chosen). ``llm_features``:
    ``[P, F]`` or a callable ``matrix -> [P, F]`` (e.g. the scorer's ``compute_llm_features`` on
    :func:`polar.predictor.sweep_prompts`), or ``None``."""
    questions = [r["question"] for r in matrix.records]
    feats = llm_features(matrix) if callable(llm_features) else llm_features
    proba = np.asarray(scorer.predict_proba(questions, llm_features=feats), dtype=float)  # [P, L_s]
    col_of = {tuple(e.program): j for j, e in enumerate(matrix.entries) if e.temperature is None}
    mapping = [col_of.get(tuple(int(i) for i in e.program), -1) for e in scorer.entries]
    P, L = len(matrix.records), len(matrix.entries)
    scores = np.full((P, L), np.nan)
    orders = np.full((P, k_max), -1, dtype=int)
    for i in range(P):
        for s, j in enumerate(mapping):
            if j >= 0:
                scores[i, j] = proba[i, s]
        row = proba[i].copy()
        picks = [s for s in scorer.select(row, min(len(row), k_max + sum(m < 0 for m in mapping))) if mapping[s] >= 0]
        orders[i, :min(k_max, len(picks))] = [mapping[s] for s in picks[:k_max]]
    return Ranking(name, orders, scores, True)


def scorer_selection(scorer, val_matrix: SweepMatrix, k: int, llm_features=None) -> dict:
    """The deployable rule of a trained scorer, chosen on a validation sweep: :func:`choose_rule`
    over the scorer's own expected-pass@k candidates (:func:`scorer_ranking`), ready for
    :func:`polar.evaluation.save_selection` (``polar train --head scorer --val-sweep`` stores it
    beside the checkpoint, so ``select="auto"`` and ``polar eval``'s answer@k use it)."""
    check_int(k, "k")
    ranking = scorer_ranking("scorer", scorer, val_matrix, k, llm_features)
    choice = choose_rule(val_matrix, _score_rows(ranking, val_matrix), k, orders=ranking.orders)
    choice["source"] = "validation sweep (polar train --head scorer --val-sweep)"
    return choice


# ----------------------------------------------------------------------------- cost


def prompt_tokens(records: Sequence[dict], prompt_style: str, tokenizer=None) -> tuple[np.ndarray, str]:
    """``([P] tokens of each prompt after the prompts' shared prefix, how)``. Without a tokenizer:
    ``ceil(len(question) / 4)`` (``how`` says which)."""
    if tokenizer is None:
        return np.array([max(1, math.ceil(len(r.get("question", "")) / 4)) for r in records], dtype=float), \
            "approx: len(question) / 4"
    prompts = [build_prompt(_problem(r), prompt_style, tokenizer) for r in records]
    ids = tokenizer(prompts, padding=False)["input_ids"]
    n = len(common_prefix(ids)) if len(ids) > 1 else 0
    return np.array([len(x) - n for x in ids], dtype=float), "tokenizer (after the shared prefix)"


def candidate_costs(matrix: SweepMatrix, T: np.ndarray, num_layers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(base [P], per_candidate [P, L])`` layer-token applications (module docstring): ``base`` the
    full program's prefill ``D * T``; a program column ``(len - s) * T + len * g``; a sample column
    ``D * g``. ``T`` ``[P]``: prompt tokens; ``num_layers``: ``D`` (default: the library's full program)."""
    D = num_layers if num_layers is not None else len(matrix.entries[full_column(matrix.entries)].program)
    base = D * T
    per = np.zeros((len(matrix.records), len(matrix.entries)))
    full_prog = tuple(range(D))
    for j, e in enumerate(matrix.entries):
        g = matrix.new_tokens[:, j].astype(float)
        if e.temperature is not None:
            per[:, j] = D * g
            continue
        s = 0
        while s < min(len(e.program), D) and e.program[s] == full_prog[s]:
            s += 1
        per[:, j] = (len(e.program) - s) * T + len(e.program) * g
    return base, per


def cumulative_cost(base: np.ndarray, per: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """``[P, K]``: the cost of the first ``k`` candidates of each row (``base`` once, plus theirs)."""
    P, K = orders.shape
    rows = np.arange(P)
    step = np.stack([np.where(orders[:, k] >= 0, per[rows, np.maximum(orders[:, k], 0)], 0.0) for k in range(K)], 1)
    return base[:, None] + np.cumsum(step, axis=1)


# ----------------------------------------------------------------------------- the study


def _problem(rec: dict) -> Problem:
    return Problem(id=str(rec.get("id")), question=rec.get("question", ""), answer=str(rec.get("gt_ans", "")),
                   source=rec.get("source", ""), level=rec.get("level"), choices=rec.get("choices"))


def _read(paths, what: str) -> SweepMatrix:
    """:func:`read_sweep` of user-named files; its errors are the user's (:class:`polar.UserError`)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise UserFileNotFoundError(f"{what} sweep file not found: {p}")
    try:
        return read_sweep(paths)
    except FileNotFoundError as err:
        raise UserFileNotFoundError(str(err)) from err
    except ValueError as err:
        raise UserError(f"{what} sweep: {err}") from err


def _temperature_columns(samples: SweepMatrix) -> dict[float, list[int]]:
    """``{T: sample columns of temperature T, in sample order}`` for :data:`TEMPERATURES`."""
    return {t: sorted((j for j, e in enumerate(samples.entries) if e.temperature is not None
                       and abs(e.temperature - t) < 1e-9), key=lambda j: samples.entries[j].sample)
            for t in TEMPERATURES}


def _key(rec: dict) -> str:
    return f"{rec.get('source')}/{rec.get('id')}"


def _default_tokenizer(settings: dict):
    """The sweep model's tokenizer when it is the default model and its converted copy is cached."""
    if settings.get("model") not in (None, "default", "smollm2", "smollm2-135m-instruct"):
        return None
    try:
        from transformers import AutoTokenizer

        folder = cache_root() / DEFAULT_MODEL_DIRNAME
        if not (folder / "tokenizer_config.json").is_file():
            return None
        return AutoTokenizer.from_pretrained(str(folder))
    except (ImportError, OSError, ValueError) as err:
        logger.warning("no tokenizer for the cost model (%s); prompt lengths are approximated", err)
        return None


def _deployable(matrix: SweepMatrix, ranking: Ranking, k: int) -> dict:
    """:func:`rule_answers` of a ranking (its scores over the matrix columns; NaN -> -1)."""
    return rule_answers(matrix, _score_rows(ranking, matrix), k, orders=ranking.orders)


def _score_rows(ranking: Ranking, matrix: SweepMatrix) -> np.ndarray:
    if ranking.scores is None:
        return np.zeros((len(matrix.records), len(matrix.entries)))
    return np.nan_to_num(ranking.scores, nan=-1.0)


def analyze_sweep(train_paths: Sequence[str | Path], test_paths: Sequence[str | Path], out: str | Path,
                  val_paths: Sequence[str | Path] | None = None, sample_paths: Sequence[str | Path] | None = None,
                  scorer=None, scorer_llm=None, llm_features=None, *, val_sample_paths: Sequence[str | Path] | None = None,
                  k_max: int = 10, deploy_k: int = 5,
                  neighbours: int | None = None, bootstrap: int = 2000, seed: int = 0, embed: Callable | None = None,
                  tokenizer=None, plots: bool = True) -> dict:
    """Run the study (module docstring) and write ``findings.md``, ``summary.json`` and plots to ``out``.

    ``train_paths``/``test_paths``/``val_paths``: program-library sweep files (one library);
    ``sample_paths``: sweeps of temperature samples of the full program on the same problems
    (matched by source and id; any split); ``val_sample_paths``: samples of validation problems (for
    the mixes' ``m`` and ``T``; validation problems without samples are left out of that choice); ``scorer``/``scorer_llm``: trained scorers (objects
    with ``entries``, ``predict_proba``, ``select``) or ``None``; ``llm_features``: passed to
    ``scorer_llm.predict_proba`` (a callable ``matrix -> [P, F]``, called for the test and the
    validation matrix, or ``None``); ``embed``:
    ``questions -> [n, e]`` unit vectors for the nearest-neighbour selector (default MiniLM);
    ``neighbours``: ``K`` (default: chosen on validation among ``NEIGHBOUR_CHOICES``, else 20);
    ``tokenizer``: for the prompt lengths of the cost model (default: the sweep model's when it
    is the cached default model, else an approximation). Returns the summary dict.

    :class:`polar.UserError` (a ``ValueError``) for ``k_max < 1``, files of different libraries,
    or a library without the full program; :class:`polar.UserFileNotFoundError` (a
    ``FileNotFoundError``) for a missing file."""
    check_int(k_max, "k_max")
    check_int(deploy_k, "deploy_k")
    check_int(bootstrap, "bootstrap")
    out = Path(out)
    train = _read(train_paths, "training")
    test = _read(test_paths, "test")
    val = _read(val_paths, "validation") if val_paths else None
    for name, m in (("test", test), ("validation", val)):
        if m is not None and [tuple(e.program) for e in m.entries] != [tuple(e.program) for e in train.entries]:
            raise UserError(f"the {name} sweep has another library than the training sweep")
    samples = _read(sample_paths, "samples") if sample_paths else None
    L = len(train.entries)
    fcol = full_column(train.entries)
    D = len(train.entries[fcol].program)
    cols = program_columns(train)
    edits = single_edit_columns(train)
    kk = min(k_max, len(cols))

    # --- selectors that need the text: embeddings once for all splits
    embed = embed or embed_mean
    all_q = [r["question"] for r in train.records] + [r["question"] for r in test.records] + \
        ([r["question"] for r in val.records] if val is not None else [])
    emb = np.asarray(embed(all_q), dtype=float)
    n_tr, n_te = len(train.records), len(test.records)
    emb_tr, emb_te, emb_va = emb[:n_tr], emb[n_tr:n_tr + n_te], emb[n_tr + n_te:]

    static = static_order(train.correct, cols, kk)
    chosen_k, k_scores = neighbours, {}
    if chosen_k is None and val is not None:
        for K in NEIGHBOUR_CHOICES:
            _, cover = nn_rankings(emb_tr, train.correct, emb_va, cols, kk, K, L)
            k_scores[K] = float(pass_curve(val.correct, cover.orders)[:, min(deploy_k, kk) - 1].mean())
        chosen_k = max(k_scores, key=lambda K: (k_scores[K], -K))
    chosen_k = chosen_k or DEFAULT_NEIGHBOURS

    if callable(llm_features):  # computed once per matrix (the deployable rankings ask again)
        computed, compute = {}, llm_features

        def llm_features(m):
            if id(m) not in computed:
                computed[id(m)] = compute(m)
            return computed[id(m)]

    def rankings_for(m: SweepMatrix, e: np.ndarray) -> list[Ranking]:
        P = len(m.records)
        out_r = [Ranking("static", np.tile(np.array(static + [-1] * (k_max - len(static))), (P, 1)),
                         np.tile(np.where(np.isin(np.arange(L), cols), train.correct.mean(axis=0), np.nan), (P, 1)))]
        out_r += list(nn_rankings(emb_tr, train.correct, e, cols, k_max, chosen_k, L))
        if scorer is not None:
            out_r.append(scorer_ranking("scorer (text)", scorer, m, k_max))
        if scorer_llm is not None:
            out_r.append(scorer_ranking("scorer (llm)", scorer_llm, m, k_max, llm_features))
        return out_r

    test_rankings = rankings_for(test, emb_te)
    val_rankings = rankings_for(val, emb_va) if val is not None else None

    def deployed(m: SweepMatrix, rankings: list[Ranking]) -> dict[str, Ranking]:
        """The rankings the deployable answer@deploy_k uses: a scorer selects its deploy_k candidates
        for k = deploy_k (its layer budget is k full programs), the others are the same orders."""
        out = {r.name: r for r in rankings}
        dk_ = min(deploy_k, kk)
        if scorer is not None:
            out["scorer (text)"] = scorer_ranking("scorer (text)", scorer, m, dk_)
        if scorer_llm is not None:
            out["scorer (llm)"] = scorer_ranking("scorer (llm)", scorer_llm, m, dk_, llm_features)
        return out

    test_deployed = deployed(test, test_rankings)

    # --- cost model
    if tokenizer is None:
        tokenizer = _default_tokenizer(train.settings)
    style = train.settings.get("prompt_style") or "fewshot"
    T_all, how = prompt_tokens(train.records + test.records, style, tokenizer)
    T_te = T_all[n_tr:]
    base_te, per_te = candidate_costs(test, T_te)
    unit = base_te + D * test.new_tokens[:, fcol]  # base greedy's cost per problem

    # --- samples of the same problems
    sample_rows = None
    if samples is not None:
        by_key = {_key(r): i for i, r in enumerate(samples.records)}
        sample_rows = [by_key.get(_key(r), -1) for r in test.records]
    sample_cols = _temperature_columns(samples) if samples is not None else {}

    # --- deployable rules: chosen on validation (pooled), applied on test
    choices = {}
    if val is not None:
        for r in deployed(val, val_rankings).values():
            choices[r.name] = choose_rule(val, _score_rows(r, val), min(deploy_k, kk), orders=r.orders)

    # --- mixes of a selector's programs and samples: m and T chosen on validation samples
    mixes: dict = {}
    val_samples = _read(val_sample_paths, "validation samples") if val_sample_paths else None
    if val is not None and val_samples is not None:
        dk = min(deploy_k, kk)
        by_v = {_key(r): i for i, r in enumerate(val_samples.records)}
        vrows = [by_v.get(_key(r), -1) for r in val.records]
        have = [i for i, x in enumerate(vrows) if x >= 0]
        vsub = val_samples.correct[[vrows[i] for i in have]] if have else None
        v_curves = {t: sample_pass_curve(vsub[:, c], dk) for t, c in _temperature_columns(val_samples).items()
                    if have and len(c) >= dk}
        for r in val_rankings if v_curves else []:
            if r.name in MIX_BASES:
                mixes[r.name] = {**choose_mix(pass_curve(val.correct[have], r.orders[have]), v_curves, dk),
                                 "validation_problems": len(have),
                                 "validation_families": sorted({family_of(val.records[i]) for i in have})}

    families = _family_sort({family_of(r) for r in test.records})
    fam_rows = {f: [i for i, r in enumerate(test.records) if family_of(r) == f] for f in families}
    train_fam = {f: [i for i, r in enumerate(train.records) if family_of(r) == f] for f in families}

    summary: dict = {"k_max": k_max, "deploy_k": deploy_k, "library_size": L, "programs": len(cols),
                     "single_edits": len(edits), "num_layers": D, "neighbours": chosen_k,
                     "neighbour_choice_val_pass": {str(k): v for k, v in k_scores.items()},
                     "prompt_tokens": how, "bootstrap": bootstrap, "seed": seed,
                     "static_programs": [train.entries[j].name for j in static],
                     "train_problems": n_tr, "test_problems": n_te,
                     "validation_problems": len(val.records) if val is not None else 0,
                     "settings": train.settings, "rules_chosen_on_validation": choices,
                     "mixes_chosen_on_validation": mixes, "families": {}}
    curves_for_ci: dict[str, dict[str, np.ndarray]] = {}
    for f in families:
        rows = fam_rows[f]
        sub = test.subset(rows)
        fam: dict = {"n": len(rows), "train_n": len(train_fam[f]), "pass": {}, "cost": {}, "lift": {}, "lift_family": {},
                     "auc": {}, "answer": {}}
        curves: dict[str, np.ndarray] = {}
        costs: dict[str, np.ndarray] = {}
        curves["oracle"] = np.tile(sub.correct[:, cols].any(axis=1)[:, None], (1, k_max)).astype(float)
        curves["base greedy"] = np.tile(sub.correct[:, fcol][:, None], (1, k_max)).astype(float)
        costs["base greedy"] = np.tile((unit[rows] / unit[rows])[:, None], (1, k_max))
        rk_list = [Ranking(r.name, r.orders[rows], None if r.scores is None else r.scores[rows], r.learned)
                   for r in test_rankings]
        if train_fam[f]:
            fs = static_order(train.correct[train_fam[f]], cols, kk)
            fs_scores = np.where(np.isin(np.arange(L), cols), train.correct[train_fam[f]].mean(axis=0), np.nan)
            rk_list.insert(1, Ranking("static (family)", np.tile(np.array(fs + [-1] * (k_max - len(fs))), (len(rows), 1)),
                                      np.tile(fs_scores, (len(rows), 1))))
            fam["static_family_programs"] = [train.entries[j].name for j in fs]
        for r in rk_list:
            curves[r.name] = pass_curve(sub.correct, r.orders).astype(float)
            costs[r.name] = cumulative_cost(base_te[rows], per_te[rows], r.orders) / unit[rows][:, None]
        if edits:
            curves["random edit"] = random_pass_curve(sub.correct, edits, k_max)
            mean_edit = per_te[rows][:, edits].mean(axis=1)
            costs["random edit"] = (base_te[rows][:, None] + mean_edit[:, None] * np.arange(1, k_max + 1)) / unit[rows][:, None]
        if samples is not None:
            srows = [sample_rows[i] for i in rows]
            have = [i for i, s in enumerate(srows) if s >= 0]
            fam["samples_n"] = len(have)
            if len(have) == len(rows):
                s_base, s_per = candidate_costs(samples.subset(srows), T_te[rows], D)
                for t, scs in sample_cols.items():
                    if len(scs) >= k_max:
                        c = samples.correct[srows][:, scs]
                        curves[f"T={t:g}"] = sample_pass_curve(c, k_max).astype(float)
                        step = s_per[:, scs[:k_max]]
                        costs[f"T={t:g}"] = (s_base[:, None] + np.cumsum(step, axis=1)) / unit[rows][:, None]
                        votes = []
                        for k in range(1, k_max + 1):
                            votes.append(float(np.mean([answer_correct(majority_answer(
                                [samples.answers[s][j] for j in scs[:k]]), _problem(test.records[rows[i]]))
                                for i, s in enumerate(srows)])))
                        fam["answer"][f"T={t:g} vote"] = votes
                for r in rk_list:
                    ch = mixes.get(r.name)
                    scs = sample_cols.get(ch["temperature"], []) if ch else []
                    if ch is None or len(scs) < k_max:
                        continue
                    m, name = ch["m"], f"mix: {r.name} + samples"
                    sc = sample_pass_curve(samples.correct[srows][:, scs], k_max)
                    curves[name] = mix_pass_curve(pass_curve(sub.correct, r.orders), sc, m, k_max).astype(float)
                    prog_cost = cumulative_cost(base_te[rows], per_te[rows], r.orders[:, :m]) if m else base_te[rows][:, None]
                    samp_cost = prog_cost[:, -1:] + np.cumsum(s_per[:, scs[:k_max - m]], axis=1)
                    costs[name] = np.concatenate([prog_cost[:, :m], samp_cost], axis=1) / unit[rows][:, None]
            elif have:
                logger.warning("family %s: samples for %d of %d test problems only; sampling left out", f,
                               len(have), len(rows))
        fam["pass"] = {name: [float(v) for v in c.mean(axis=0)] for name, c in curves.items()}
        fam["cost"] = {name: [float(v) for v in c.mean(axis=0)] for name, c in costs.items()}
        curves_for_ci[f] = curves
        # lifts of the learned selectors
        for r in rk_list:
            if not r.learned:
                continue
            fam["lift"][r.name] = [list(bootstrap_ci(curves[r.name][:, k] - curves["static"][:, k], bootstrap, seed + k))
                                   for k in range(k_max)]
            if "static (family)" in curves:
                fam["lift_family"][r.name] = [list(bootstrap_ci(curves[r.name][:, k] - curves["static (family)"][:, k],
                                                                bootstrap, seed + k)) for k in range(k_max)]
        fam["mix_lift"] = _mix_lifts(curves, bootstrap, seed, k_max)
        # AUC per program of every selector with per-input scores
        for r in rk_list:
            if not r.learned or r.scores is None or r.name == "nn (cover)":
                continue
            per_prog = {}
            for j in cols:
                truth = sub.correct[:, j]
                if truth.sum() >= 3 and (~truth).sum() >= 3 and np.all(np.isfinite(r.scores[:, j])):
                    per_prog[train.entries[j].name] = auc(r.scores[:, j], truth)
            vals = np.array(list(per_prog.values()))
            fam["auc"][r.name] = {"programs": len(vals), "mean": float(vals.mean()) if vals.size else None,
                                  "median": float(np.median(vals)) if vals.size else None,
                                  "share_above_0.5": float((vals > 0.5).mean()) if vals.size else None,
                                  "per_program": per_prog}
        lp = sub.logprob_first[:, fcol]
        fam["full_confidence_auc"] = auc(np.nan_to_num(lp, nan=-1e9), sub.correct[:, fcol])
        # deployable answers at deploy_k
        dk = min(deploy_k, kk)
        for name, full_r in test_deployed.items():
            r = Ranking(name, full_r.orders[rows], None if full_r.scores is None else full_r.scores[rows], full_r.learned)
            ra = _deployable(sub, r, dk)
            entry = {"top1": float(ra["top1"].mean()), "vote": float(ra["vote"].mean()),
                     "layers_vote": float(ra["layers_vote"].mean())}
            if r.name in choices:
                ch = choices[r.name]
                t = ch["candidates"]["gate"]["threshold"]
                gc, fb = gate_correct(ra, t)
                entry.update({"gate": float(gc.mean()), "gate_threshold": t, "gate_fallback_rate": float(fb.mean()),
                              "layers_gate": float((ra["layers_full"] + np.where(fb, ra["layers_others"], 0)).mean()),
                              "auto_rule": ch["rule"]})
                entry["auto"] = entry["gate"] if ch["rule"] == "gate" else entry[ch["rule"]]
            fam["answer"][r.name] = entry
        fam["answer"]["base greedy"] = float(sub.correct[:, fcol].mean())
        summary["families"][f] = fam

    # --- the average over in-distribution families, stratified bootstrap
    ind = [f for f in families if f in IN_DISTRIBUTION]
    summary["in_distribution"] = ind
    if ind:
        names = set.intersection(*(set(curves_for_ci[f]) for f in ind))
        avg: dict = {"pass": {n: [float(np.mean([summary["families"][f]["pass"][n][k] for f in ind]))
                                  for k in range(k_max)] for n in names}, "lift": {}}
        for r in test_rankings:
            if r.learned:
                avg["lift"][r.name] = [list(bootstrap_ci([curves_for_ci[f][r.name][:, k] - curves_for_ci[f]["static"][:, k]
                                                           for f in ind], bootstrap, seed + k)) for k in range(k_max)]
        avg["mix_lift"] = _mix_lifts([curves_for_ci[f] for f in ind], bootstrap, seed, k_max)
        summary["average"] = avg
    summary["verdict"] = verdict(summary)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1) + "\n", encoding="utf-8")
    (out / "findings.md").write_text(findings_markdown(summary), encoding="utf-8")
    summary["plots"] = write_plots(summary, out) if plots else []
    return summary


# ----------------------------------------------------------------------------- reporting


def _mix_lifts(curves, bootstrap: int, seed: int, k_max: int) -> dict:
    """Bootstrap lifts of every ``mix: ...`` curve over ``static`` and over the static mix. ``curves``:
    ``{name: [P, k_max]}`` of one family, or a list of them (stratified over families)."""
    groups = curves if isinstance(curves, list) else [curves]
    if not groups:
        return {}
    names = set.intersection(*(set(g) for g in groups))
    out = {}
    static_mix = "mix: static + samples"
    for n in sorted(x for x in names if x.startswith("mix: ")):
        for ref, label in (("static", n), (static_mix, f"{n} vs {static_mix}")):
            if ref in names and ref != n:
                diffs = [[g[n][:, k] - g[ref][:, k] for g in groups] for k in range(k_max)]
                out[label] = [list(bootstrap_ci(d if isinstance(curves, list) else d[0], bootstrap, seed + k))
                              for k, d in enumerate(diffs)]
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def verdict(summary: dict) -> dict:
    """Whether any learned selector beats best static, from the bootstrap intervals: per selector
    and for k = 1 and k = ``deploy_k``, the families where the lift's 95% interval lies above 0 /
    below 0 / contains 0, the in-distribution average lift, and the mean per-program AUC.
    ``input_predicts_program``: some selector's average lift has its interval above 0 at one of
    these k (``None`` without an in-distribution family)."""
    ks = sorted({1, min(summary["deploy_k"], summary["k_max"])})
    out: dict = {"ks": ks, "selectors": {}}
    names = sorted({n for f in summary["families"].values() for n in f["lift"]})
    found = []
    for n in names:
        entry: dict = {}
        for k in ks:
            above, below, inside = [], [], []
            for fname, fam in summary["families"].items():
                if n not in fam["lift"]:
                    continue
                est, lo, hi = fam["lift"][n][k - 1]
                (above if lo > 0 else below if hi < 0 else inside).append(fname)
            avg = summary.get("average", {}).get("lift", {}).get(n)
            entry[f"k={k}"] = {"above_static": above, "below_static": below, "ci_contains_0": inside,
                               "average_lift": avg[k - 1] if avg else None}
            if avg and avg[k - 1][1] > 0:
                found.append((n, k))
        aucs = [fam["auc"][n]["mean"] for fam in summary["families"].values()
                if n in fam["auc"] and fam["auc"][n]["mean"] is not None]
        entry["mean_program_auc"] = float(np.mean(aucs)) if aucs else None
        out["selectors"][n] = entry
    out["input_predicts_program"] = bool(found) if summary.get("average") else None
    out["evidence"] = [f"{n} at k={k}" for n, k in found]
    return out


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.1f}"


def _ci(t) -> str:
    est, lo, hi = t
    return f"{100 * est:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def findings_markdown(summary: dict) -> str:
    """The study's tables and the verdict (markdown)."""
    K = summary["k_max"]
    ks = [k for k in (1, 3, 5, 10) if k <= K]
    dk = min(summary["deploy_k"], K)
    fams = list(summary["families"])
    lines = ["# Learnability of program choice from the sweep matrices", "",
             f"Library: {summary['programs']} programs ({summary['single_edits']} single edits), D = {summary['num_layers']}; "
             f"{summary['train_problems']} training, {summary['validation_problems']} validation, "
             f"{summary['test_problems']} test problems. Best static (pooled set cover, first 5): "
             f"{', '.join(summary['static_programs'][:5])}. Nearest neighbours: K = {summary['neighbours']}"
             + (" (chosen on validation)" if summary["neighbour_choice_val_pass"] else "") + ". "
             f"Prompt lengths for the cost: {summary['prompt_tokens']}. Intervals: paired bootstrap 95%, "
             f"{summary['bootstrap']} resamples of the problems.", ""]
    v = summary["verdict"]
    lines += ["## Verdict", ""]
    for n, s in v["selectors"].items():
        parts = []
        for k in v["ks"]:
            e = s[f"k={k}"]
            avg = e["average_lift"]
            parts.append(f"k = {k}: " + (f"in-distribution average lift {_ci(avg)} points" if avg else "no average")
                         + f"; interval above 0 on {', '.join(e['above_static']) or 'no family'}, below 0 on "
                         f"{', '.join(e['below_static']) or 'no family'}, containing 0 on "
                         f"{', '.join(e['ci_contains_0']) or 'no family'}")
        auc_text = f"; mean per-program AUC {s['mean_program_auc']:.3f}" if s["mean_program_auc"] is not None else ""
        lines.append(f"- **{n}** vs best static: " + ". ".join(parts) + auc_text + ".")
    if v["selectors"]:
        lines.append("")
        answer = v["input_predicts_program"]
        lines.append("**Does any input feature predict which program works?** " + (
            "Not decided: no in-distribution family in the test data." if answer is None else
            f"Yes: the in-distribution average lift over best static has a 95% interval above 0 for "
            f"{', '.join(v['evidence'])}." if answer else
            "No evidence: no learned selector's in-distribution average lift over best static has a 95% interval "
            f"above 0 at k = {' or '.join(map(str, v['ks']))} (a per-program AUC near 0.5 means the scores do not "
            "rank the inputs on which a program works)."))
        lines.append("")
    mixes = summary.get("mixes_chosen_on_validation") or {}
    if mixes:
        lines += ["**Programs mixed with samples** (m programs, then samples at T; chosen on validation by "
                  f"pass@{dk}): " + "; ".join(
                      f"{n}: m = {c['m']}, T = {c['temperature']:g} (validation pass@{dk} {_pct(c['pass'])}, "
                      f"{c['validation_problems']} problems of {', '.join(c['validation_families'])})"
                      for n, c in mixes.items()) + ".", ""]
        avg = summary.get("average", {})
        for n, lifts in avg.get("mix_lift", {}).items():
            lines.append(f"- **{n}**: in-distribution average lift at k = {dk} {_ci(lifts[dk - 1])} points.")
        if avg.get("mix_lift"):
            lines.append("")
    for f in fams:
        fam = summary["families"][f]
        lines += [f"## {f} ({fam['n']} test problems, {fam['train_n']} training problems of the family)", "",
                  "| method | " + " | ".join(f"pass@{k}" for k in ks) + f" | cost@{dk} (x greedy) |",
                  "|---|" + "---|" * (len(ks) + 1)]
        for name, curve in fam["pass"].items():
            cost = fam["cost"].get(name)
            lines.append(f"| {name} | " + " | ".join(_pct(curve[k - 1]) for k in ks) +
                         f" | {cost[dk - 1]:.2f} |" if cost else f"| {name} | " + " | ".join(_pct(curve[k - 1]) for k in ks) + " | - |")
        lines.append("")
        if fam["lift"]:
            lines += ["| lift over best static (points) | " + " | ".join(f"k={k}" for k in ks) + " |",
                      "|---|" + "---|" * len(ks)]
            for name, lifts in fam["lift"].items():
                lines.append(f"| {name} | " + " | ".join(_ci(lifts[k - 1]) for k in ks) + " |")
            for name, lifts in fam["lift_family"].items():
                lines.append(f"| {name} vs static (family) | " + " | ".join(_ci(lifts[k - 1]) for k in ks) + " |")
            lines.append("")
        if fam.get("mix_lift"):
            lines += ["| mix: lift (points) | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
            lines += [f"| {name} | " + " | ".join(_ci(lifts[k - 1]) for k in ks) + " |"
                      for name, lifts in fam["mix_lift"].items()]
            lines.append("")
        if fam["auc"]:
            lines.append("Per-program AUC of the predicted score (programs with >= 3 right and >= 3 wrong): " + "; ".join(
                f"{n}: mean {a['mean']:.3f}, median {a['median']:.3f}, {100 * a['share_above_0.5']:.0f}% above 0.5 "
                f"({a['programs']} programs)" if a["mean"] is not None else f"{n}: no program with both classes"
                for n, a in fam["auc"].items()) + ".")
        if fam.get("full_confidence_auc") is not None and math.isfinite(fam["full_confidence_auc"]):
            lines.append(f"The full program's first-answer-token log-probability vs its correctness: AUC "
                         f"{fam['full_confidence_auc']:.3f}.")
        lines.append("")
        ans = fam["answer"]
        rows = [(n, a) for n, a in ans.items() if isinstance(a, dict)]
        if rows:
            lines += [f"Deployable answer@{dk} (no gold answer; gate threshold and auto rule chosen on validation): "
                      f"base greedy {_pct(ans['base greedy'])}.", "",
                      "| selector | top1 | vote | gate | auto (rule) | layers: vote / gate |", "|---|---|---|---|---|---|"]
            for n, a in rows:
                lines.append(f"| {n} | {_pct(a['top1'])} | {_pct(a['vote'])} | {_pct(a.get('gate'))} | "
                             f"{_pct(a.get('auto'))} ({a.get('auto_rule', '-')}) | {a['layers_vote']:.0f} / "
                             f"{a['layers_gate']:.0f} |" if "gate" in a else
                             f"| {n} | {_pct(a['top1'])} | {_pct(a['vote'])} | - | - | {a['layers_vote']:.0f} / - |")
            votes = [(n, a) for n, a in ans.items() if isinstance(a, list)]
            if votes:
                lines.append("")
                lines.append("Sampling, majority vote of the first k samples: " + "; ".join(
                    f"{n} @{dk} {_pct(a[dk - 1])}" for n, a in votes) + ".")
            lines.append("")
        eq = equal_compute(fam)
        if eq:
            lines += ["Best pass@k within a compute budget (mean cost per problem, x base greedy):", "",
                      "| method | " + " | ".join(f"<= {b:g}x" for b in EQUAL_BUDGETS) + " |",
                      "|---|" + "---|" * len(EQUAL_BUDGETS)]
            for name, vals in eq.items():
                lines.append(f"| {name} | " + " | ".join(_pct(x) for x in vals) + " |")
            lines.append("")
    if "average" in summary:
        avg = summary["average"]
        lines += [f"## Average over {', '.join(summary['in_distribution'])}", "",
                  "| method | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for name, curve in sorted(avg["pass"].items()):
            lines.append(f"| {name} | " + " | ".join(_pct(curve[k - 1]) for k in ks) + " |")
        lines.append("")
        if avg["lift"]:
            lines += ["| lift over best static (stratified bootstrap) | " + " | ".join(f"k={k}" for k in ks) + " |",
                      "|---|" + "---|" * len(ks)]
            for name, lifts in avg["lift"].items():
                lines.append(f"| {name} | " + " | ".join(_ci(lifts[k - 1]) for k in ks) + " |")
            for name, lifts in avg.get("mix_lift", {}).items():
                lines.append(f"| {name} | " + " | ".join(_ci(lifts[k - 1]) for k in ks) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


#: Compute budgets (x base greedy) of the equal-compute table.
EQUAL_BUDGETS = (1.5, 2.0, 3.0, 5.0)


def equal_compute(fam: dict) -> dict[str, list[float | None]]:
    """Per method, the best pass@k whose mean cost is within each of :data:`EQUAL_BUDGETS`."""
    out = {}
    for name, cost in fam["cost"].items():
        if name == "base greedy":
            continue
        curve = fam["pass"][name]
        out[name] = [max((p for p, c in zip(curve, cost) if c <= b + 1e-9), default=None) for b in EQUAL_BUDGETS]
    return out


def write_plots(summary: dict, out: Path) -> list[str]:
    """``pass_at_k.png`` (pass@k curves per family), ``pass_vs_compute.png`` (pass@k against mean
    cost) and ``lift.png`` (lift over best static with intervals at k = deploy_k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(summary["families"])
    if not fams:
        return []
    K = summary["k_max"]
    n = len(fams)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    written = []
    for fname, use_cost in (("pass_at_k.png", False), ("pass_vs_compute.png", True)):
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
        for ax, f in zip(axes.flat, fams):
            fam = summary["families"][f]
            for name, curve in fam["pass"].items():
                style = "--" if name in ("oracle", "base greedy") else "-"
                if use_cost:
                    if name not in fam["cost"] or name == "oracle":
                        continue
                    ax.plot(fam["cost"][name], [100 * v for v in curve], style, marker=".", label=name)
                else:
                    ax.plot(range(1, K + 1), [100 * v for v in curve], style, marker=".", label=name)
            ax.set_title(f"{f} (n={fam['n']})")
            ax.set_xlabel("mean cost (x base greedy)" if use_cost else "k")
            ax.set_ylabel("pass@k (%)")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        written.append(fname)
    k = min(summary["deploy_k"], K) - 1
    names = sorted({s for f in fams for s in summary["families"][f]["lift"]})
    if names:
        fig, ax = plt.subplots(figsize=(1.2 * n * len(names) + 3, 3.8))
        width = 0.8 / len(names)
        for s_i, s in enumerate(names):
            xs, ys, err = [], [], [[], []]
            for f_i, f in enumerate(fams):
                lift = summary["families"][f]["lift"].get(s)
                if lift is None:
                    continue
                est, lo, hi = lift[k]
                xs.append(f_i + s_i * width)
                ys.append(100 * est)
                err[0].append(100 * (est - lo))
                err[1].append(100 * (hi - est))
            ax.bar(xs, ys, width, yerr=err, capsize=3, label=s)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(n)], fams)
        ax.set_ylabel(f"pass@{k + 1} lift over best static (points)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "lift.png", dpi=110)
        plt.close(fig)
        written.append("lift.png")
    return written


__all__ = ["FAMILY_ORDER", "IN_DISTRIBUTION", "Ranking", "analyze_sweep", "auc", "bootstrap_ci", "candidate_costs",
           "choose_mix", "cumulative_cost", "embed_mean", "equal_compute", "family_of", "findings_markdown", "mix_pass_curve", "nn_rankings",
           "pass_curve", "program_columns", "prompt_tokens", "random_pass_curve", "sample_pass_curve",
           "scorer_ranking", "scorer_selection", "single_edit_columns", "static_order", "verdict", "write_plots"]
