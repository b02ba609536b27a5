"""Router checkpoints: a folder with ``router.safetensors`` (the router's parameters and buffers)
and ``config.json``::

    {"format": "polar-router", "version": 1, "kind": "drllm" | "mindskip" | "flexidepth",
     "router": {the kind's config fields},
     "base_model": {"name", "model_type", "num_layers", "hidden_size"},
     "num_parameters": 1234,
     "training": {settings, versions, data, label report, history, ...}}

:func:`load_router` rebuilds the router object (a :class:`polar.Router`, in eval mode) and, given
the base model, refuses one trained for another depth, width or (MindSkip) other norm weights.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError, UserFileNotFoundError
from ..jobs import write_atomic
from ..runtime.adapters import get_adapter
from ._config import ROUTER_KINDS, config_from_dict
from ._drllm import DrLLMRouter
from ._flexidepth import FlexiDepthRouter
from ._mindskip import MindSkipRouter

ROUTER_FORMAT = "polar-router"
ROUTER_VERSION = 1
WEIGHTS_FILE = "router.safetensors"
CONFIG_FILE = "config.json"

#: The router class of each kind.
ROUTER_CLASSES = {"drllm": DrLLMRouter, "mindskip": MindSkipRouter, "flexidepth": FlexiDepthRouter}


def base_model_info(model: nn.Module, name: str | None = None) -> dict[str, Any]:
    """What a checkpoint records of the base model: name, type, depth and width."""
    config = model.config
    return {"name": name, "model_type": getattr(config, "model_type", None),
            "num_layers": int(config.num_hidden_layers), "hidden_size": int(config.hidden_size)}


def num_parameters(router: nn.Module) -> int:
    return sum(p.numel() for p in router.parameters())


def save_router(router: nn.Module, folder: str | os.PathLike) -> Path:
    """Write ``router.safetensors`` and ``config.json`` (with ``router.metadata``) into ``folder``."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in router.state_dict().items()}
    write_atomic(folder / WEIGHTS_FILE, save(state, metadata={"format": ROUTER_FORMAT, "kind": router.kind}))
    config = {"format": ROUTER_FORMAT, "version": ROUTER_VERSION, "kind": router.kind,
              "router": router.config.to_dict(), "num_parameters": num_parameters(router), **router.metadata}
    write_atomic(folder / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return folder


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a router checkpoint folder (checked: format, version, kind)."""
    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise UserFileNotFoundError(f"{folder} is not a router checkpoint: no {name}")
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{folder / CONFIG_FILE}: not JSON ({err})") from None
    if meta.get("format") != ROUTER_FORMAT or meta.get("version") != ROUTER_VERSION:
        raise UserError(f"{folder / CONFIG_FILE}: not a {ROUTER_FORMAT} v{ROUTER_VERSION} checkpoint")
    if meta.get("kind") not in ROUTER_KINDS:
        raise UserError(f"{folder / CONFIG_FILE}: unknown router kind {meta.get('kind')!r}")
    return meta


def load_router(folder: str | os.PathLike, model: nn.Module | None = None,
                device: str | torch.device | None = None) -> nn.Module:
    """The router saved in ``folder`` (:class:`DrLLMRouter`, :class:`MindSkipRouter` or
    :class:`FlexiDepthRouter`), in eval mode, on ``device`` (default: the model's, else CPU).

    With ``model`` (the base model it will route), raises :class:`polar.UserError` when the router
    was trained for another depth or width, or (MindSkip) with other input-norm weights.
    :class:`polar.UserFileNotFoundError` for a folder that is not a router checkpoint."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_config(folder)
    kind = meta.pop("kind")
    config = config_from_dict(kind, meta.pop("router"))
    for key in ("format", "version", "num_parameters"):
        meta.pop(key, None)
    router = ROUTER_CLASSES[kind](config, metadata=meta)
    try:
        router.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except RuntimeError as err:
        raise UserError(f"{folder / WEIGHTS_FILE} does not match its config.json ({str(err).splitlines()[0]})") from None
    if model is not None:
        check_router_model(router, model, where=str(folder))
        if device is None:
            device = get_adapter(model).device
    return router.to(device or "cpu").eval()


def check_router_model(router: nn.Module, model: nn.Module, where: str = "the router") -> None:
    """:class:`polar.UserError` unless ``router`` was made for ``model`` (depth, width, MindSkip's norms)."""
    D, d = int(model.config.num_hidden_layers), int(model.config.hidden_size)
    if (router.config.num_layers, router.config.hidden_size) != (D, d):
        raise UserError(f"{where} was trained for a model with {router.config.num_layers} layers of width "
                        f"{router.config.hidden_size}; this model has {D} layers of width {d}")
    if isinstance(router, MindSkipRouter):
        adapter = get_adapter(model)
        for i, layer in enumerate(router.config.layers):
            w = adapter.layers[layer].input_layernorm.weight.detach().float().cpu()
            if not torch.allclose(router.norm_weight[i].cpu(), w, rtol=1e-3, atol=1e-3):
                raise UserError(f"{where} was trained on another model: layer {layer}'s input norm differs")
