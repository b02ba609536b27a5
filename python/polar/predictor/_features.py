"""Feature vectors of the scorer: the question's text, the LLM's state on the prompt, the program.

- :func:`text_features`: the frozen text encoder's token vectors, mean-pooled over the real
  tokens (``[n, e]``; cached through :func:`polar.predictor.encode_cached`).
- :func:`llm_features`: one forward of the LLM under the full program on each prompt (the plain
  Hugging Face forward, which the full program reproduces), read at the prompt's end: for every
  hidden-state index ``l`` of ``layers`` (``hidden_states[l]``: 0 the embeddings, ``l`` the output
  of layer ``l - 1``, ``D`` the final-normed output) the mean over the last ``last_tokens`` real
  tokens and the last token's vector, then the next-token distribution's top log-probability
  and entropy (the full program's confidence in its first answer token; nats). Shape
  ``[n, 2 * len(layers) * H + 2]``. A deployed system gets these from the full program's prefill,
  which it runs anyway. :func:`llm_features_cached` stores them on disk.
- :func:`program_features`: a program as per-layer run counts, so programs outside the library
  can be scored: ``[r_i == 0 (D), r_i == 1 (D), max(r_i - 1, 0) (D), len / D]`` (``3 D + 1``),
  ``r_i`` the number of times layer ``i`` runs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..programs import validate_program
from ._encoder import TextEncoder, _fingerprint, encode_cached


def program_features(program: Sequence[int], num_layers: int) -> np.ndarray:
    """``[3 D + 1]`` float32 run-count features of one program (module docstring); ``ValueError``
    for a program that is not valid for ``num_layers`` layers."""
    program = validate_program(list(program), num_layers, max_length=8 * num_layers)
    runs = np.bincount(np.asarray(program, dtype=np.int64), minlength=num_layers).astype(np.float32)  # [D]
    return np.concatenate([(runs == 0), (runs == 1), np.maximum(runs - 1, 0),
                           [len(program) / num_layers]]).astype(np.float32)


def programs_features(programs: Sequence[Sequence[int]], num_layers: int) -> np.ndarray:
    """:func:`program_features` of every program: ``[M, 3 D + 1]``."""
    return np.stack([program_features(p, num_layers) for p in programs]) if programs else \
        np.zeros((0, 3 * num_layers + 1), dtype=np.float32)


def text_features(encoder: TextEncoder, texts: Sequence[str], cache_dir: str | os.PathLike | None = None,
                  batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Mean-pooled encoder vectors ``[n, e]`` float32 (the token vectors are cached in ``cache_dir``)."""
    tokens = encode_cached(encoder, list(texts), cache_dir, batch_size, progress)  # [T_i, e] each
    if not tokens:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return torch.stack([t.mean(dim=0) for t in tokens]).numpy().astype(np.float32)


@torch.no_grad()
def llm_features(model, tokenizer, prompts: Sequence[str], layers: Sequence[int], last_tokens: int = 8,
                 batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """The LLM's state at the end of each prompt (module docstring): ``[n, 2 * len(layers) * H + 2]``
    float32. ``layers``: hidden-state indices in ``0..D``. Prompts are left-padded in batches of
    ``batch_size``, positions counted over real tokens (padding does not change a row)."""
    D = model.config.num_hidden_layers
    layers = [int(i) for i in layers]
    if not layers or any(not 0 <= i <= D for i in layers):
        raise ValueError(f"layers must be hidden-state indices in 0..{D}, got {layers}")
    if last_tokens < 1:
        raise ValueError(f"last_tokens must be positive, got {last_tokens}")
    device = next(model.parameters()).device
    ids = [list(x) for x in tokenizer(list(prompts), padding=False)["input_ids"]]
    if any(not x for x in ids):
        raise ValueError("every prompt needs at least one token")
    out: list[np.ndarray] = []
    starts = range(0, len(ids), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="LLM features", unit="batch")
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
    for s in starts:
        chunk = ids[s : s + batch_size]
        T = max(len(x) for x in chunk)
        input_ids = torch.full((len(chunk), T), pad, dtype=torch.long)  # [b, T], left-padded
        mask = torch.zeros(len(chunk), T, dtype=torch.long)  # [b, T]
        for r, x in enumerate(chunk):
            input_ids[r, T - len(x):] = torch.tensor(x, dtype=torch.long)
            mask[r, T - len(x):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [b, T]: real tokens count from 0
        res = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                    output_hidden_states=True, use_cache=False, logits_to_keep=1)
        tail = mask.clone()  # [b, T]: the last `last_tokens` real tokens of each row
        tail[:, : max(0, T - last_tokens)] = 0
        tail = tail.to(device).unsqueeze(-1).float()  # [b, T, 1]
        parts = []
        for i in layers:
            h = res.hidden_states[i].float()  # [b, T, H]
            parts.append((h * tail).sum(1) / tail.sum(1).clamp(min=1.0))  # [b, H] mean of the last tokens
            parts.append(h[:, -1])  # [b, H] the last token
        logp = torch.log_softmax(res.logits[:, -1].float(), dim=-1)  # [b, V]
        top = logp.max(dim=-1).values  # [b]
        entropy = -(logp.exp() * logp).sum(-1)  # [b]
        parts.append(torch.stack([top, entropy], dim=-1))  # [b, 2]
        out.append(torch.cat(parts, dim=-1).cpu().numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 2 * len(layers) * model.config.hidden_size + 2), np.float32)


def llm_features_cached(model, tokenizer, prompts: Sequence[str], layers: Sequence[int], last_tokens: int = 8,
                        cache_dir: str | os.PathLike | None = None, batch_size: int = 8,
                        progress: bool = False) -> np.ndarray:
    """:func:`llm_features`, stored once under ``cache_dir/llmfeat-<key>.npy`` (key: a fingerprint
    of the model's weights, the layers, ``last_tokens`` and the prompts) and read back later."""
    if cache_dir is None:
        return llm_features(model, tokenizer, prompts, layers, last_tokens, batch_size, progress)
    h = hashlib.sha256(f"{_fingerprint(model)}|{list(layers)}|{last_tokens}|{len(prompts)}".encode())
    for p in prompts:
        h.update(hashlib.sha256(p.encode()).digest())
    path = Path(cache_dir) / f"llmfeat-{h.hexdigest()[:32]}.npy"
    if path.is_file():
        return np.load(path)
    feats = llm_features(model, tokenizer, prompts, layers, last_tokens, batch_size, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    np.save(tmp, feats)
    os.replace(tmp, path)
    return feats
