"""The resumable training loop every router kind uses (docs/architecture.md section 8: long jobs).

``fit(router, n_train, step_loss, ...)``: AdamW over the router's trainable parameters, linear
warmup and cosine decay, a tqdm bar, ``epochs`` passes over the training examples in an order
drawn from ``(seed, epoch)``. The gradient is taken with :func:`torch.autograd.grad` on the
router's parameters only, so a frozen base model in the graph never gets a ``.grad``.

Resumable: ``train_state.pt`` (router state, optimizer, schedule, position, history, settings) is
replaced atomically every ``save_every`` steps and at every epoch's end, ``train_log.jsonl`` (one
line per finished epoch) at every epoch's end. A rerun with the same
settings continues from it and ends with the same weights as an uninterrupted run; a rerun with
other settings is refused (:class:`polar.UserError`); a finished run (``done``) is not retrained.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import UserError
from ..jobs import write_atomic
from ._config import RouterTrainConfig

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"


def lr_factor(step: int, total_steps: int, tc: RouterTrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warmup over ``warmup_frac`` of the steps, then a
    cosine from 1 down to ``min_lr_ratio``."""
    warmup = int(tc.warmup_frac * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def read_state(out_dir: Path, settings: dict[str, Any], partial: bool = False) -> dict[str, Any] | None:
    """The saved training state of ``out_dir`` (``None``: none yet); :class:`polar.UserError` when it
    belongs to a run with other settings (``partial``: compare only the keys of ``settings``, the
    ones known before the model is loaded)."""
    path = out_dir / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = state.get("settings", {})
    keys = set(settings) if partial else set(saved) | set(settings)
    diff = sorted(k for k in keys if saved.get(k) != settings.get(k))
    if diff:
        raise UserError(f"{out_dir} holds a router training run with other settings ({', '.join(diff)} differ); "
                        f"use another --out folder")
    return state


def mark_done(out_dir: Path, settings: dict[str, Any], step: int) -> None:
    """Replace the state by a small 'done' record (the weights live in the checkpoint)."""
    buf = io.BytesIO()
    torch.save({"settings": settings, "done": True, "step": step}, buf)
    write_atomic(out_dir / STATE_FILE, buf.getvalue())


def fit(router: nn.Module, n_train: int, step_loss: Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]],
        tc: RouterTrainConfig, seed: int, out_dir: Path, settings: dict[str, Any], *,
        evaluate: Callable[[], dict[str, float]] | None = None, progress: bool = True,
        on_step: Callable[[int, dict[str, float]], None] | None = None, desc: str = "training router",
        state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train ``router`` in place; returns the per-epoch history (train means, ``evaluate()``'s values).

    ``step_loss(indices)``: the loss of the training examples ``indices`` (and metrics to log);
    ``state``: what :func:`read_state` returned (resume from it). ``on_step(step, metrics)`` runs
    after each optimizer step (and after the state of that step was saved, when it was); an
    exception raised there stops training like a kill would.
    """
    if n_train < 1:
        raise UserError("no training examples (all held out for validation?)")
    params = [p for p in router.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
    steps_per_epoch = math.ceil(n_train / tc.batch_size)
    total = tc.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, tc))
    step, epoch, batch0 = 0, 0, 0
    history: list[dict[str, Any]] = []
    sums: dict[str, float] = {}
    if state is not None:
        router.load_state_dict(state["router"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, batch0 = state["step"], state["epoch"], state["batch"]
        history, sums = state["history"], state["sums"]

    def save_state() -> None:
        buf = io.BytesIO()
        torch.save({"settings": settings, "router": router.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "epoch": epoch, "batch": batch0,
                    "history": history, "sums": sums, "done": False}, buf)
        write_atomic(out_dir / STATE_FILE, buf.getvalue())

    out_dir.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=step, desc=desc, unit="step", disable=not progress) as bar:
        while epoch < tc.epochs:
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            batches = order.split(tc.batch_size)
            for b in range(batch0, len(batches)):
                router.train()
                loss, metrics = step_loss(batches[b].tolist())
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for p, g in zip(params, grads):
                    p.grad = torch.zeros_like(p) if g is None else g
                if tc.grad_clip > 0:
                    nn.utils.clip_grad_norm_(params, tc.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step, batch0 = step + 1, b + 1
                metrics = {"loss": float(loss.detach()), **metrics}
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                sums["n"] = sums.get("n", 0.0) + 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, **{k: f"{v:.4g}" for k, v in metrics.items()})
                if step % tc.save_every == 0 and batch0 < len(batches):
                    save_state()
                if on_step is not None:
                    on_step(step, metrics)
            entry: dict[str, Any] = {"epoch": epoch, "step": step, "lr": scheduler.get_last_lr()[0]}
            entry |= {f"train_{k}": v / max(1.0, sums["n"]) for k, v in sums.items() if k != "n"}
            if evaluate is not None:
                router.eval()
                entry |= evaluate()
                bar.set_postfix(epoch=epoch, **{k: f"{v:.4g}" for k, v in entry.items() if k.startswith("val_")})
            history.append(entry)
            epoch, batch0, sums = epoch + 1, 0, {}
            save_state()
            write_atomic(out_dir / LOG_FILE, "".join(json.dumps(h) + "\n" for h in history).encode())
    router.eval()
    return history
