"""Training the predictor on search results (paper section 3.2; docs/architecture.md sections 11 and 16).

``train(records, config, out_dir)``:

1. targets from the canonical parse of every valid program with ``config.k_max`` and
   ``config.max_runs`` (``_targets.build_targets``);
2. a validation split by problem (a hash of ``seed`` and the problem id), for model selection;
3. the frozen encoder's outputs for every question, computed once (cached under
   ``out_dir/encoder_cache``);
4. AdamW with linear warmup and cosine decay; loss = BCE on boundaries + CE on the ops at segment
   starts (:func:`predictor_loss`); a tqdm bar with the losses;
5. after each epoch: validation loss and top-1 agreement (the decoded top-1 program is one of the
   problem's valid programs); the best epoch is written as the checkpoint (``model.safetensors``
   + ``config.json``), the curves to ``train_log.jsonl``;
6. the resumable state (``train_state.pt``: weights, optimizer, schedule, RNG, position) after
   every epoch and every ``save_every_steps`` steps, replaced atomically. A rerun with the same
   settings resumes from it (and gives the same final weights as an uninterrupted run); a rerun
   with other settings is refused; a finished run is loaded, not retrained (its state file then
   keeps only the settings and a "done" mark).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..jobs import versions
from ..programs import DEFAULT_MAX_RUNS, Op
from ..search import read_sweep
from ._config import DecodeConfig, PredictorConfig, TrainConfig
from ._decode import decode_batch
from ._encoder import TextEncoder, encode_cached, load_encoder, pad_tokens
from ..jobs import write_atomic
from ._predictor import Predictor
from ._targets import (ProblemTargets, SearchRecord, TargetReport, build_targets, load_search_results, records_from_sweep,
                       sha256_file)

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"


def predictor_loss(seg_logits: torch.Tensor, op_logits: torch.Tensor, seg_target: torch.Tensor,
                   op_target: torch.Tensor, weight: torch.Tensor | None = None, anti: torch.Tensor | None = None,
                   anti_original_lambda: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, seg_loss, op_loss)``, each a weighted mean over the batch of per-problem values.

    Per problem (``D`` layers): ``seg = mean_i BCE(seg_logits[i], seg_target[i])`` and
    ``op = sum_i sum_c -op_target[i, c] * log_softmax(op_logits[i])[c] / D``; ``loss = seg + op``,
    averaged with the problems' ``weight`` [B] (``ProblemTargets.weight``; None: all 1):
    ``sum_p W_p loss_p / sum_p W_p``. The anti-original penalty (reference code,
    ``--anti_original_lambda``): for the problems flagged in ``anti`` [B] (their full program is
    invalid), ``anti_original_lambda * mean_p mean_i softmax(op_logits[p, i])[keep]`` (the mean
    probability of "keep" over all ``D`` layers) is added to ``loss``; it is 0 when no problem of
    the batch is flagged. Shapes: ``seg_*`` [B, D], ``op_*`` [B, D, C] (``C = max_runs + 1``).
    """
    D = seg_logits.shape[-1]
    seg = F.binary_cross_entropy_with_logits(seg_logits, seg_target, reduction="none").mean(-1)  # [B]
    op = -(op_target * F.log_softmax(op_logits, dim=-1)).sum(dim=(-1, -2)) / D  # [B]
    if weight is None:
        w = torch.full_like(seg, 1.0 / seg.shape[0])  # [B]
    else:
        w = weight.to(seg.dtype) / weight.sum().clamp(min=1e-12)  # [B], sums to 1
    seg_loss, op_loss = (w * seg).sum(), (w * op).sum()
    loss = seg_loss + op_loss
    if anti is not None and anti_original_lambda > 0:
        a = anti.to(seg.dtype)  # [B] 1.0: the problem's full program is invalid
        keep = F.softmax(op_logits, dim=-1)[..., Op.KEEP].mean(-1)  # [B] mean P(keep) over the layers
        loss = loss + anti_original_lambda * (a * keep).sum() / a.sum().clamp(min=1.0)
    return loss, seg_loss, op_loss


def split_problems(ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: the ``int(val_fraction * n)`` problems with the smallest
    ``sha256(f"{seed}:{id}")`` are validation (stable under reordering and added problems)."""
    n_val = int(val_fraction * len(ids))
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).hexdigest())
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return train, val


def _lr_lambda(total_steps: int, tc: TrainConfig) -> Callable[[int], float]:
    warmup = int(tc.warmup_frac * total_steps)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _optimizer(predictor: Predictor, tc: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in predictor.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in predictor.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, 0.95))


def _records_sha256(records: Sequence[SearchRecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.id, r.question, r.valid_programs, r.initial_score]).encode())
    return h.hexdigest()


def _weights(chunk: Sequence[ProblemTargets]) -> tuple[torch.Tensor, torch.Tensor]:
    """Problem weights [b] and anti-original flags [b] (1.0: the full program is invalid)."""
    return (torch.tensor([t.weight for t in chunk], dtype=torch.float32),
            torch.tensor([0.0 if t.full_valid else 1.0 for t in chunk]))


@torch.no_grad()
def _evaluate(predictor: Predictor, tokens: list[torch.Tensor], targets: list[ProblemTargets],
              batch_size: int, anti_original_lambda: float = 0.0) -> dict[str, float]:
    """Validation loss terms and top-1 agreement (decoded top-1 is a valid program)."""
    predictor.eval()
    sums = {"loss": 0.0, "seg_loss": 0.0, "op_loss": 0.0}
    hits = 0
    for s in range(0, len(targets), batch_size):
        chunk = targets[s : s + batch_size]
        x, mask = pad_tokens(tokens[s : s + batch_size])  # [b, T, e], [b, T]
        seg, ops = predictor(x, mask)  # [b, D], [b, D, C]
        seg_t = torch.stack([t.seg_target for t in chunk])  # [b, D]
        op_t = torch.stack([t.op_target for t in chunk])  # [b, D, C]
        w, anti = _weights(chunk)  # [b], [b]
        for key, value in zip(sums, predictor_loss(seg, ops, seg_t, op_t, w, anti, anti_original_lambda)):
            sums[key] += float(value) * len(chunk)
        top1 = decode_batch(seg, ops, 1, predictor.config.k_max, DecodeConfig())
        hits += sum(preds[0].program in t.programs for preds, t in zip(top1, chunk))
    n = len(targets)
    return {f"val_{k}": v / n for k, v in sums.items()} | {"val_top1": hits / n}


def _better(entry: dict[str, Any], best: dict[str, Any] | None, select_by: str) -> bool:
    if best is None:
        return True
    if "val_loss" not in entry:  # no validation split: the latest epoch is the model
        return True
    if select_by == "top1":
        return (entry["val_top1"], -entry["val_loss"]) > (best["val_top1"], -best["val_loss"])
    return entry["val_loss"] < best["val_loss"]


def train(records: Sequence[SearchRecord], config: PredictorConfig, out_dir: str | os.PathLike, *,
          seed: int = 0, train_config: TrainConfig | None = None, encoder: TextEncoder | None = None,
          data_files: dict[str, str] | None = None, cache_dir: str | os.PathLike | None = None,
          progress: bool = True, on_step: Callable[[int, dict[str, float]], None] | None = None) -> Predictor:
    """Train a predictor on search records; return the selected (best) model, loaded from ``out_dir``.

    ``encoder``: the frozen encoder (default: built from ``config.encoder``; required for "llm").
    ``data_files``: ``{path: sha256}`` of the files the records came from, recorded in the
    checkpoint. ``cache_dir``: where encoder outputs are cached (default ``out_dir/encoder_cache``).
    ``on_step(step, losses)`` is called after every optimizer step (an exception raised there
    stops training like a kill would; the next call resumes).

    Raises ``ValueError`` when no problem has a usable valid program, or when ``out_dir`` holds a
    run with other settings.
    """
    tc = train_config or TrainConfig()
    out_dir = Path(out_dir)
    if encoder is None:
        encoder = load_encoder(config.encoder, max_tokens=config.encoder_max_tokens, llm_name=config.llm_name)
    if config.encoder_dim is None:
        config = replace(config, encoder_dim=encoder.dim)
    targets, report = build_targets(records, config.num_layers, config.k_max, config.full_program_weight,
                                    max_runs=config.max_runs, lenpref_beta=tc.lenpref_beta,
                                    per_problem_normalize=tc.per_problem_normalize,
                                    drop_full_if_shorter=tc.drop_full_if_shorter)
    if not targets:
        raise ValueError(f"no problem has a usable valid program ({report.summary()})")
    log = logger.warning if report.not_in_space or report.invalid else logger.info
    log("training targets: %s", report.summary())
    train_idx, val_idx = split_problems([t.id for t in targets], tc.val_fraction, seed)
    train_t, val_t = [targets[i] for i in train_idx], [targets[i] for i in val_idx]

    settings = {
        "predictor": config.to_dict(), "train": tc.to_dict(), "seed": seed,
        "encoder": encoder.identity(), "records_sha256": _records_sha256(records),
    }
    state_path = out_dir / STATE_FILE
    state: dict[str, Any] | None = None
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = state["settings"]
        if isinstance(saved.get("predictor"), dict) and "max_runs" not in saved["predictor"]:  # saved before max_runs
            saved = {**saved, "predictor": {**saved["predictor"], "max_runs": DEFAULT_MAX_RUNS}}
        if isinstance(saved.get("train"), dict):  # saved before the reference remedies existed
            saved = {**saved, "train": {**TrainConfig().to_dict(), **saved["train"]}}
        if saved != settings:
            diff = sorted(k for k in settings if saved.get(k) != settings[k])
            raise ValueError(f"{out_dir} holds a training run with other settings ({', '.join(diff)} differ); "
                             f"use another output directory")
        if state["done"]:
            return Predictor.load(out_dir, encoder=encoder)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokens = encode_cached(encoder, [t.question for t in targets], cache_dir or out_dir / "encoder_cache",
                           tc.encode_batch_size, progress)  # [T_i, e] per problem
    train_tok, val_tok = [tokens[i] for i in train_idx], [tokens[i] for i in val_idx]

    torch.manual_seed(seed)
    metadata = {
        "llm": {"name": config.llm_name, "num_layers": config.num_layers},
        "training": {
            "seed": seed, "train_config": tc.to_dict(), "data_files": dict(data_files or {}),
            "records_sha256": settings["records_sha256"], "targets": _report_dict(report),
            "n_train": len(train_t), "n_val": len(val_t), "versions": versions(),
        },
    }
    predictor = Predictor(config, encoder, metadata=metadata)
    optimizer = _optimizer(predictor, tc)
    steps_per_epoch = math.ceil(len(train_t) / tc.batch_size)
    total_steps = tc.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, tc))
    step, epoch, batch0 = 0, 0, 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    sums = {"loss": 0.0, "seg_loss": 0.0, "op_loss": 0.0, "n": 0}
    if state is not None:
        predictor.net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, epoch, batch0 = state["step"], state["epoch"], state["batch"]
        history, best, sums = state["history"], state["best"], state["sums"]

    def save_state() -> None:
        buf = io.BytesIO()
        torch.save({
            "settings": settings, "model": predictor.net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": step, "epoch": epoch,
            "batch": batch0, "history": history, "best": best, "sums": sums, "done": False,
        }, buf)
        write_atomic(state_path, buf.getvalue())

    from tqdm.auto import tqdm

    with tqdm(total=total_steps, initial=step, desc="training predictor", unit="step", disable=not progress) as bar:
        while epoch < tc.epochs:
            order = torch.randperm(len(train_t), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            batches = order.split(tc.batch_size)
            for b in range(batch0, len(batches)):
                idx = batches[b].tolist()
                predictor.train()
                x, mask = pad_tokens([train_tok[i] for i in idx])  # [b, T, e], [b, T]
                seg_t = torch.stack([train_t[i].seg_target for i in idx])  # [b, D]
                op_t = torch.stack([train_t[i].op_target for i in idx])  # [b, D, C]
                seg, ops = predictor(x, mask)  # [b, D], [b, D, C]
                w, anti = _weights([train_t[i] for i in idx])  # [b], [b]
                loss, seg_loss, op_loss = predictor_loss(seg, ops, seg_t, op_t, w, anti, tc.anti_original_lambda)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(predictor.parameters(), tc.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                losses = {"loss": loss.item(), "seg_loss": seg_loss.item(), "op_loss": op_loss.item()}
                for key, value in losses.items():
                    sums[key] += value * len(idx)
                sums["n"] += len(idx)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{losses['loss']:.4f}", seg=f"{losses['seg_loss']:.4f}",
                                op=f"{losses['op_loss']:.4f}")
                batch0 = b + 1
                if tc.save_every_steps and step % tc.save_every_steps == 0 and batch0 < len(batches):
                    save_state()
                if on_step is not None:
                    on_step(step, losses)
            entry: dict[str, Any] = {"epoch": epoch, "step": step, "lr": scheduler.get_last_lr()[0]}
            entry |= {f"train_{k}": sums[k] / max(1, sums["n"]) for k in ("loss", "seg_loss", "op_loss")}
            if val_t:
                entry |= _evaluate(predictor, val_tok, val_t, tc.batch_size, tc.anti_original_lambda)
                bar.set_postfix(epoch=epoch, val_loss=f"{entry['val_loss']:.4f}", val_top1=f"{entry['val_top1']:.3f}")
            history.append(entry)
            if _better(entry, best, tc.select_by):
                best = entry
                predictor.metadata["training"] |= {"best": best}
                predictor.save(out_dir)
            write_atomic(out_dir / LOG_FILE, "".join(json.dumps(h) + "\n" for h in history).encode())
            epoch, batch0 = epoch + 1, 0
            sums = {"loss": 0.0, "seg_loss": 0.0, "op_loss": 0.0, "n": 0}
            save_state()
    # The checkpoint holds the best epoch's weights; record the whole history beside them.
    final = Predictor.load(out_dir, encoder=encoder)
    final.metadata["training"] |= {"history": history, "best": best, "epochs_run": epoch}
    final.save(out_dir)
    # A finished run keeps only what a rerun needs to recognise it (weights live in the checkpoint).
    buf = io.BytesIO()
    torch.save({"settings": settings, "done": True, "step": step, "epoch": epoch}, buf)
    write_atomic(state_path, buf.getvalue())
    return final


def _report_dict(report: TargetReport) -> dict[str, Any]:
    return {k: v for k, v in vars(report).items()}


def _result_settings(records: Sequence[SearchRecord]) -> dict[str, Any]:
    """The LLM name and depth recorded in the search results' settings (``settings.model``,
    ``settings.num_layers``), refusing results that mix different values."""
    found: dict[str, set] = {"model": set(), "num_layers": set()}
    for r in records:
        for key in found:
            if key in r.settings and r.settings[key] is not None:
                found[key].add(r.settings[key] if not isinstance(r.settings[key], list) else tuple(r.settings[key]))
    for key, values in found.items():
        if len(values) > 1:
            raise ValueError(f"the search results mix settings: {key} is one of {sorted(map(str, values))}")
    return {key: next(iter(values)) for key, values in found.items() if values}


def merge_records(*groups: Sequence[SearchRecord]) -> list[SearchRecord]:
    """Records of several sources, one per problem id: the valid programs of a problem found in
    several sources are united (first order kept), its ``initial_score`` is the first one known."""
    merged: dict[str, SearchRecord] = {}
    for group in groups:
        for r in group:
            old = merged.get(r.id)
            if old is None:
                merged[r.id] = r
                continue
            programs = tuple(dict.fromkeys(old.valid_programs + r.valid_programs))
            score = old.initial_score if old.initial_score is not None else r.initial_score
            merged[r.id] = SearchRecord(old.id, old.question, programs, score, old.settings, old.source)
    return list(merged.values())


def train_from_files(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                     config: PredictorConfig | dict[str, Any] | None = None, *, seed: int = 0,
                     train_config: TrainConfig | None = None, encoder: TextEncoder | None = None,
                     cache_dir: str | os.PathLike | None = None, progress: bool = True,
                     on_step: Callable[[int, dict[str, float]], None] | None = None,
                     limit: int | None = None, sweep: Sequence[str | os.PathLike] = ()) -> Predictor:
    """Train on search results files (JSONL, one record per problem) and/or sweep files
    (``polar sweep``: the correct program entries of each problem are its valid programs,
    :func:`polar.predictor._targets.records_from_sweep`) into ``out_dir``; ``limit``: the first
    ``limit`` records of each search file only (recorded in ``data_files``). A problem in several
    files gets the union of its valid programs.

    ``config``: a :class:`PredictorConfig`, or a dict of its fields; fields not given there
    (``num_layers``, ``llm_name``) come from the results' ``settings`` (``num_layers``, ``model``).
    A ``config`` whose depth or LLM contradicts the results is refused (``ValueError``), as are
    results that mix depths or models. Everything else is :func:`train`.
    """
    paths = [Path(p) for p in paths]
    sweep = [Path(p) for p in sweep]
    if not paths and not sweep:
        raise ValueError("no search results or sweep file given")
    records = load_search_results(paths, limit=limit) if paths else []
    if sweep:
        records = merge_records(records, records_from_sweep(read_sweep(sweep)))
    found = _result_settings(records)
    fields = dict(config.to_dict()) if isinstance(config, PredictorConfig) else dict(config or {})
    for key, field in (("num_layers", "num_layers"), ("model", "llm_name")):
        if key not in found:
            continue
        if fields.get(field) is None:
            fields[field] = found[key]
        elif fields[field] != found[key]:
            raise ValueError(f"{field} is {fields[field]!r} but the search results were made with {key} {found[key]!r}")
    if fields.get("num_layers") is None:
        raise ValueError("the search results do not record the model's depth (settings.num_layers); "
                         "give it in config (num_layers)")
    # A file read only in part is described by its limit (it may still grow); records_sha256
    # in the checkpoint fixes exactly what was read either way.
    data_files = {str(p): sha256_file(p) if limit is None else f"first {limit} records" for p in paths}
    data_files |= {str(p): sha256_file(p) for p in sweep}
    return train(records, PredictorConfig.from_dict(fields), out_dir, seed=seed, train_config=train_config,
                 encoder=encoder, data_files=data_files, cache_dir=cache_dir, progress=progress, on_step=on_step)
