"""Training the routers (``polar train-router``): DR.LLM on search labels, MindSkip and FlexiDepth
with the LM loss; the base model frozen; resumable; a checkpoint folder at the end.

- :func:`train_router` (the command's function): reads and checks the inputs before any model is
  loaded (search records or ``--data`` specs), loads the model, builds the examples and calls:
- :func:`fit_drllm`: teacher forcing. The states entering each layer are computed once, along each
  problem's label program, and pooled in windows (``[P, D, W, d]``); the routers train on them with
  the focal loss and effective-number class weights of the training labels.
- :func:`fit_gated`: MindSkip or FlexiDepth, end to end through the frozen model
  (:func:`._forward.forward_hidden` with the router's gates) with the LM loss on the answer tokens
  (FlexiDepth: plus ``alpha`` times its layer-usage penalty).

Both write ``train_state.pt`` as they go (:mod:`._loop`), then the checkpoint (``config.json`` with
the settings, versions, data and history; ``router.safetensors``) and ``train_log.jsonl``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import UserError
from ..jobs import versions
from ..models import load_model, model_depth
from ..runtime.adapters import get_adapter
from ..runtime.routing import LayerGates
from ..search import read_results
from ..tasks import DEFAULT_PROMPT_STYLE, resolve
from ..tasks.prompts import generation_setting
from ._checkpoint import base_model_info, load_router, save_router
from ._config import (DrLLMConfig, FlexiDepthConfig, MindSkipConfig, RouterRun, RouterTrainConfig)
from ._data import (DrLLMExample, LMExample, collate, drllm_examples, examples_sha256, lm_examples, split_ids)
from ._drllm import DrLLMRouter, class_weights, focal_loss, label_problems, window_means
from ._flexidepth import FlexiDepthRouter, usage_penalty
from ._forward import forward_hidden, lm_loss
from ._loop import fit, mark_done, read_state
from ._mindskip import MindSkipRouter, norm_eps

logger = logging.getLogger(__name__)


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    return 0 if pad is None else int(pad)


def _finish(router: nn.Module, out_dir: Path, settings: dict[str, Any], history: list[dict], training: dict) -> None:
    router.metadata.setdefault("training", {}).update(training | {"history": history, "settings": settings,
                                                                   "versions": versions()})
    save_router(router, out_dir)
    mark_done(out_dir, settings, history[-1]["step"] if history else 0)


# ----------------------------------------------------------------------------------- DR.LLM


@torch.no_grad()
def drllm_features(model, examples: Sequence[DrLLMExample], windows: int, batch_size: int = 16,
                   pad_id: int = 0, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced DR.LLM inputs: the states entering each layer along each example's label
    program, pooled in windows: ``(features [P, D, W, d] float32, valid [P, W] bool)`` on the CPU."""
    adapter = get_adapter(model)
    feats, valid = [], []
    from tqdm.auto import tqdm

    for s in tqdm(range(0, len(examples), batch_size), desc="DR.LLM features", disable=not progress):
        chunk = examples[s:s + batch_size]
        batch = collate(chunk, pad_id).to(adapter.device)
        counts = torch.tensor([e.label for e in chunk], dtype=torch.long)      # [b, D]
        per_layer: list[torch.Tensor] = []
        got: list[torch.Tensor] = []

        def record(layer: int, hidden: torch.Tensor) -> None:
            means, ok = window_means(hidden, batch.mask, windows)              # [b, W, d], [b, W]
            per_layer.append(means.cpu())
            if not got:
                got.append(ok.cpu())

        forward_hidden(adapter, batch.ids, batch.mask, counts=counts, on_layer=record)
        feats.append(torch.stack(per_layer, 1))                                 # [b, D, W, d]
        valid.append(got[0])
    return torch.cat(feats), torch.cat(valid)


@torch.no_grad()
def _drllm_eval(router: DrLLMRouter, feats, valid, labels, weights, gamma) -> dict[str, float]:
    if len(labels) == 0:
        return {}
    logits = router(feats, valid)                                               # [n, D, 3]
    pred = logits.argmax(-1)
    return {"val_loss": float(focal_loss(logits.reshape(-1, 3), labels.reshape(-1), weights, gamma)),
            "val_accuracy": float((pred == labels).float().mean()),
            "val_exact": float((pred == labels).all(-1).float().mean())}


def fit_drllm(model, examples: Sequence[DrLLMExample], out_dir: str | os.PathLike, *,
              train_config: RouterTrainConfig | None = None, seed: int = 0, config: DrLLMConfig | None = None,
              model_name: str | None = None, pad_id: int = 0, extra_settings: dict[str, Any] | None = None,
              training_info: dict[str, Any] | None = None, progress: bool = True,
              on_step: Callable[[int, dict[str, float]], None] | None = None) -> DrLLMRouter:
    """Train DR.LLM's routers on ``examples`` (prompt ids + labels) for ``model``; the checkpoint goes
    to ``out_dir`` and the trained router (eval mode) is returned. Resumes / reuses a run in
    ``out_dir`` with the same settings (``extra_settings`` are part of them)."""
    tc = train_config or RouterTrainConfig()
    adapter = get_adapter(model)
    config = config or DrLLMConfig(num_layers=adapter.num_layers, hidden_size=int(model.config.hidden_size))
    out_dir = Path(out_dir)
    if not examples:
        raise UserError("no labelled problems to train DR.LLM on")
    for e in examples:
        if len(e.label) != config.num_layers or any(c not in (0, 1, 2) for c in e.label):
            raise UserError(f"example {e.id!r}: a label needs {config.num_layers} entries in 0..2, got {list(e.label)}")
    train_idx, val_idx = split_ids([e.id for e in examples], tc.val_fraction, seed)
    settings = {"kind": "drllm", "router": config.to_dict(), "train": tc.to_dict(), "seed": seed,
                "examples_sha256": examples_sha256(examples), **(extra_settings or {})}
    state = read_state(out_dir, settings)
    if state is not None and state.get("done"):
        return load_router(out_dir, model)
    labels = torch.tensor([e.label for e in examples], dtype=torch.long)       # [P, D]
    counts = torch.bincount(labels[train_idx].reshape(-1), minlength=3).tolist()
    weights = class_weights(counts, tc.class_beta)                              # [3]
    feats, valid = drllm_features(model, examples, config.windows, tc.batch_size, pad_id, progress)
    torch.manual_seed(seed)
    router = DrLLMRouter(config, metadata={"base_model": base_model_info(model, model_name)})
    tr_f, tr_v, tr_y = feats[train_idx], valid[train_idx], labels[train_idx]
    va_f, va_v, va_y = feats[val_idx], valid[val_idx], labels[val_idx]

    def step_loss(idx: list[int]):
        logits = router(tr_f[idx], tr_v[idx])                                   # [b, D, 3]
        loss = focal_loss(logits.reshape(-1, 3), tr_y[idx].reshape(-1), weights, tc.focal_gamma)
        return loss, {"accuracy": float((logits.argmax(-1) == tr_y[idx]).float().mean())}

    history = fit(router, len(train_idx), step_loss, tc, seed, out_dir, settings,
                  evaluate=lambda: _drllm_eval(router, va_f, va_v, va_y, weights, tc.focal_gamma),
                  progress=progress, on_step=on_step, desc="training DR.LLM routers", state=state)
    _finish(router, out_dir, settings, history, (training_info or {}) | {
        "n_train": len(train_idx), "n_val": len(val_idx), "class_counts": counts,
        "class_weights": weights.tolist()})
    return router.to(adapter.device)


# ----------------------------------------------------------------------------------- MindSkip / FlexiDepth


def gated_loss(router: nn.Module, adapter, batch, alpha: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """LM loss of ``batch`` (a :class:`._data.Batch` on the model's device) through the frozen model
    with ``router``'s training gates; FlexiDepth adds ``alpha`` times its usage penalty. Returns
    ``(loss, metrics)``: ``lm_loss``, ``open`` (share of open gates: rows for MindSkip, real tokens
    for FlexiDepth) and for FlexiDepth ``penalty`` and ``layers`` (executed gated layers per token)."""
    opened: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    if isinstance(router, MindSkipRouter):
        def gates(layer, hidden):
            if not router.gated(layer):
                return None
            g = router.train_gate(layer, hidden, batch.prompt)                  # [B]
            opened.append(g.detach())
            return LayerGates(attention=g)
    else:
        def gates(layer, hidden):
            if not router.gated(layer):
                return None
            lg, g = router.layer_gates(layer, hidden)                           # g [B, T]
            values.append(g)
            opened.append(lg.token.float())
            return lg
    hidden = forward_hidden(adapter, batch.ids, batch.mask, gates=gates)
    loss, _ = lm_loss(adapter, hidden, batch.targets)
    metrics = {"lm_loss": float(loss.detach())}
    if isinstance(router, MindSkipRouter):
        metrics["open"] = float(torch.stack(opened).mean()) if opened else 1.0
        return loss, metrics
    m = batch.mask.float()
    stacked = torch.stack(opened)                                               # [L, B, T]
    metrics["open"] = float((stacked * m).sum() / (m.sum() * len(opened)).clamp(min=1))
    metrics["layers"] = float((stacked * m).sum() / m.sum().clamp(min=1))
    penalty = usage_penalty(values, batch.mask)
    metrics["penalty"] = float(penalty.detach())
    return loss + alpha * penalty, metrics


def fit_gated(model, router: MindSkipRouter | FlexiDepthRouter, examples: Sequence[LMExample],
              out_dir: str | os.PathLike, *, train_config: RouterTrainConfig | None = None, seed: int = 0,
              pad_id: int = 0, extra_settings: dict[str, Any] | None = None,
              training_info: dict[str, Any] | None = None, progress: bool = True,
              on_step: Callable[[int, dict[str, float]], None] | None = None) -> nn.Module:
    """Train a fresh MindSkip or FlexiDepth ``router`` (made for ``model``) with the LM loss on
    ``examples``; checkpoint to ``out_dir``; returns the trained router (eval mode). Resumes /
    reuses a run in ``out_dir`` with the same settings."""
    tc = train_config or RouterTrainConfig()
    adapter = get_adapter(model)
    out_dir = Path(out_dir)
    if not examples:
        raise UserError(f"no training examples for {router.kind}")
    train_idx, val_idx = split_ids([e.id for e in examples], tc.val_fraction, seed)
    settings = {"kind": router.kind, "router": router.config.to_dict(), "train": tc.to_dict(), "seed": seed,
                "examples_sha256": examples_sha256(examples), **(extra_settings or {})}
    state = read_state(out_dir, settings)
    if state is not None and state.get("done"):
        return load_router(out_dir, model)
    router.metadata.setdefault("base_model", base_model_info(model, None))
    router.to(adapter.device)
    alpha = tc.alpha if isinstance(router, FlexiDepthRouter) else 0.0
    train_ex = [examples[i] for i in train_idx]
    val_ex = [examples[i] for i in val_idx]

    def step_loss(idx: list[int]):
        return gated_loss(router, adapter, collate([train_ex[i] for i in idx], pad_id).to(adapter.device), alpha)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        if not val_ex:
            return {}
        sums: dict[str, float] = {}
        for s in range(0, len(val_ex), tc.batch_size):
            chunk = val_ex[s:s + tc.batch_size]
            loss, metrics = gated_loss(router, adapter, collate(chunk, pad_id).to(adapter.device), alpha)
            for k, v in {"loss": float(loss), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v * len(chunk)
        return {f"val_{k}": v / len(val_ex) for k, v in sums.items()}

    history = fit(router, len(train_ex), step_loss, tc, seed, out_dir, settings, evaluate=evaluate,
                  progress=progress, on_step=on_step, desc=f"training {router.kind} routers", state=state)
    _finish(router, out_dir, settings, history, (training_info or {}) | {"n_train": len(train_ex),
                                                                          "n_val": len(val_ex)})
    return router


# ----------------------------------------------------------------------------------- the command


def _search_inputs(run: RouterRun) -> tuple[list[dict], str, int | None]:
    """Search records, their prompt style and depth, checked before any model is loaded."""
    records = read_results(list(run.search), same_settings=False, limit=run.limit)
    styles = {r.get("prompt_style") for r in records} - {None}
    if len(styles) > 1:
        raise UserError(f"the search results mix prompt styles {sorted(styles)}; train on one style")
    style = next(iter(styles)) if styles else None
    if run.prompt_style is not None and style is not None and run.prompt_style != style:
        raise UserError(f"--prompt-style {run.prompt_style} but the search results used {style!r} prompts")
    style = run.prompt_style or style or DEFAULT_PROMPT_STYLE
    generation_setting(style)
    depths = {int(r["num_layers"]) for r in records if r.get("num_layers") is not None}
    if len(depths) > 1:
        raise UserError(f"the search results mix model depths {sorted(depths)}")
    return records, style, next(iter(depths)) if depths else None


def _problems(run: RouterRun) -> list:
    problems = []
    for spec in run.data:
        got = resolve(spec)
        problems += list(got)[: run.limit] if run.limit is not None else list(got)
    if not problems:
        raise UserError(f"no problems in {', '.join(run.data)}")
    return problems


def train_router(run: RouterRun, out: str | os.PathLike, *, model=None, tokenizer=None, progress: bool = True,
                 on_step: Callable[[int, dict[str, float]], None] | None = None) -> nn.Module:
    """Train the router ``run`` describes into the checkpoint folder ``out`` and return it.

    DR.LLM: labels from ``run.search`` (:func:`polar.routers.label_problems`; the label report is
    logged and recorded); MindSkip / FlexiDepth: the problems of ``run.data`` (prompt + gold
    answer). ``model``/``tokenizer``: the base model (default: ``polar.load_model(run.model)``).
    Bad inputs raise :class:`polar.UserError` before any model is loaded; a run in ``out`` with
    other settings is refused; a finished one is loaded, not retrained."""
    style = run.prompt_style or DEFAULT_PROMPT_STYLE
    generation_setting(style)
    records: list[dict] = []
    problems: list = []
    depth = None
    if run.kind == "drllm":
        records, style, depth = _search_inputs(run)
    else:
        problems = _problems(run)
    out = Path(out)
    settings = run.settings()
    settings.pop("train")
    known = settings | {"kind": run.kind, "train": run.train.to_dict(), "seed": run.seed}
    read_state(out, known, partial=True)  # another run's folder: refused before the model is loaded
    if model is None:
        if depth is not None and model_depth(run.model) != depth:  # before the weights are loaded
            raise UserError(f"the search results were made with a {depth}-layer model; {run.model} has "
                            f"{model_depth(run.model)} layers")
        model, tokenizer = load_model(run.model, device=run.device)
    if tokenizer is None:
        raise UserError("train_router needs the tokenizer with the model")
    adapter = get_adapter(model)
    D = adapter.num_layers
    if depth is not None and depth != D:
        raise UserError(f"the search results were made with a {depth}-layer model; {run.model} has {D} layers")
    settings["num_layers"] = D
    tc = run.train
    info: dict[str, Any] = {"run": run.settings(), "prompt_style": style}
    if run.kind == "drllm":
        labelled, report = label_problems(records, D)
        (logger.warning if report.reordered else logger.info)("DR.LLM labels: %s", report.summary())
        examples = drllm_examples(labelled, tokenizer, style)
        info |= {"labels": report.to_dict()}
        return fit_drllm(model, examples, out, train_config=tc, seed=run.seed, model_name=run.model,
                         pad_id=_pad_id(tokenizer), extra_settings=settings, training_info=info,
                         progress=progress, on_step=on_step)
    examples = lm_examples(problems, tokenizer, style, tc.max_tokens)
    d = int(model.config.hidden_size)
    eps = norm_eps(adapter.layers[0].input_layernorm)
    if run.kind == "mindskip":
        router = MindSkipRouter.for_model(adapter, MindSkipConfig(D, d, norm_eps=eps), seed=run.seed)
    else:
        config = FlexiDepthConfig(D, d, int(model.config.intermediate_size), norm_eps=eps)
        router = FlexiDepthRouter.for_model(adapter, config, seed=run.seed)
    router.metadata["base_model"] = base_model_info(model, run.model)
    return fit_gated(model, router, examples, out, train_config=tc, seed=run.seed, pad_id=_pad_id(tokenizer),
                     extra_settings=settings, training_info=info, progress=progress, on_step=on_step)

