"""``Predictor``: frozen encoder + network + decoding, and its checkpoint format.

A checkpoint directory holds ``model.safetensors`` (the network's weights only; the frozen
encoder is named, not stored) and ``config.json``::

    {"format": "polar-predictor", "version": 1,
     "predictor": {PredictorConfig fields},
     "encoder": {"spec": "minilm", "identity": "hf:model:<fingerprint>", "dim": 384},
     "num_parameters": 1951236,
     ... training metadata (LLM, data hashes, hyperparameters, history) when written by train()}

``Predictor.load`` rebuilds the encoder from its spec (or takes one: required for ``"llm"``) and
refuses an encoder whose weights fingerprint differs from the recorded one.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import UserError, UserFileNotFoundError
from ..jobs import write_atomic
from ._config import DecodeConfig, PredictorConfig
from ._decode import Prediction, decode_batch
from ._encoder import TextEncoder, load_encoder
from ._network import PolarNet
from ._scorer import Scorer, is_scorer_checkpoint

CHECKPOINT_FORMAT = "polar-predictor"
CHECKPOINT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _same_spec(a: str, b: str) -> bool:
    if a == b:
        return True
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _fingerprint_of(identity: str) -> str:
    return identity.rsplit(":", 1)[-1]


#: Where the predictor shipped for the default model lives (package data): the one best on validation
#: (results/predictor/README.md; today a scorer, results/predictor/scorer_text).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default"
#: The paper's segment predictor shipped for the default model (results/predictor/skip_loop_r5).
DEFAULT_SEGMENTS_CHECKPOINT = Path(__file__).resolve().parent / "default_segments"


class Predictor(nn.Module):
    """Predicts programs of layers for questions (docs/architecture.md section 11).

    ``config.encoder_dim`` is filled from ``encoder.dim`` when unset. The encoder is frozen and is
    *not* a submodule: ``parameters()``, ``state_dict()``, ``.to()`` and ``save()`` cover the
    network only, and the encoder stays on its own device (its outputs are moved to the
    network's). Raises ``ValueError`` when the encoder does not match ``config`` (spec or width).
    """

    def __init__(self, config: PredictorConfig, encoder: TextEncoder, metadata: dict[str, Any] | None = None):
        super().__init__()
        if config.encoder_dim is None:
            config = replace(config, encoder_dim=encoder.dim)
        if config.encoder_dim != encoder.dim:
            raise UserError(f"config.encoder_dim is {config.encoder_dim} but the encoder's width is {encoder.dim}")
        if not _same_spec(config.encoder, encoder.spec):
            raise UserError(f"config.encoder is {config.encoder!r} but the encoder given is {encoder.spec!r}")
        self.config = config
        self.net = PolarNet(config)
        object.__setattr__(self, "encoder", encoder)  # plain attribute: frozen, not saved, not moved
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def num_parameters(self) -> int:
        """Trainable parameters, the frozen encoder excluded."""
        return self.net.num_parameters()

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs ``tokens`` [B, T, e] and ``mask`` [B, T] -> ``(seg [B, D], ops [B, D, C])``,
        ``C = config.max_runs + 1``."""
        return self.net(tokens, mask)

    @torch.no_grad()
    def logits(self, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary logits [B, D] and op logits [B, D, max_runs + 1] for ``questions`` (eval mode, no grad)."""
        if isinstance(questions, str):
            raise UserError("questions must be a list of strings, not one string")
        device = self.net.layer_queries.device
        tokens, mask = self.encoder.encode(list(questions))  # [B, T, e], [B, T]
        was_training = self.training
        self.eval()
        try:
            return self.net(tokens.to(device), mask.to(device))
        finally:
            self.train(was_training)

    def predict(self, questions: Sequence[str], k: int = 5, decode: DecodeConfig | None = None,
                batch_size: int = 64) -> list[list[Prediction]]:
        """The top-``k`` distinct programs per question, best first (see ``_decode``).

        Returns one list per question with ``min(k, programs found)`` predictions, plus the full
        program flagged ``fallback=True`` when ``decode.fallback_full`` asks for it.
        """
        decode = decode or DecodeConfig()
        if isinstance(questions, str):
            raise UserError("questions must be a list of strings, not one string")
        questions = list(questions)
        out: list[list[Prediction]] = []
        for s in range(0, len(questions), batch_size):
            seg, ops = self.logits(questions[s : s + batch_size])  # [b, D], [b, D, C]
            out.extend(decode_batch(seg.cpu(), ops.cpu(), k, self.config.k_max, decode))
        return out

    # ----------------------------------------------------------------------------- checkpoints

    def checkpoint_config(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "predictor": self.config.to_dict(),
            "encoder": {"spec": self.encoder.spec, "identity": self.encoder.identity(), "dim": self.encoder.dim},
            "num_parameters": self.num_parameters(),
            **self.metadata,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed)."""
        from safetensors.torch import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: t.detach().to("cpu").contiguous() for name, t in self.net.state_dict().items()}
        write_atomic(directory / WEIGHTS_FILE, save(state, metadata={"format": CHECKPOINT_FORMAT}))
        text = json.dumps(self.checkpoint_config(), indent=2, sort_keys=True) + "\n"
        write_atomic(directory / CONFIG_FILE, text.encode())
        return directory

    @classmethod
    def load_default(cls, *, head: str = "auto", embedding: nn.Module | None = None,
                     tokenizer: Callable | None = None):
        """The predictor shipped with polar for the default model (SmolLM2-135M-Instruct).

        ``head="auto"``: the one that was best on the validation splits (results/predictor/README.md),
        today a :class:`polar.predictor.Scorer` (text features, trained on the program-library
        sweeps; its ``selection.json`` holds the answer rule of ``polar.solve(select="auto")``);
        ``head="segments"``: the paper's segment predictor (trained on ``results/search``).
        ``FileNotFoundError`` when this install has none; ``ValueError`` for another ``head``."""
        if head not in ("auto", "segments"):
            raise UserError(f"head must be 'auto' or 'segments', got {head!r}")
        folder = DEFAULT_SEGMENTS_CHECKPOINT if head == "segments" else DEFAULT_CHECKPOINT
        if not (folder / CONFIG_FILE).is_file():
            raise UserFileNotFoundError(f"no shipped predictor checkpoint in {folder}")
        if is_scorer_checkpoint(folder):
            return Scorer.load(folder)
        return cls.load(folder, embedding=embedding, tokenizer=tokenizer)

    @classmethod
    def load(cls, directory: str | os.PathLike, encoder: TextEncoder | None = None, *,
             embedding: nn.Module | None = None, tokenizer: Callable | None = None,
             device: str | torch.device = "cpu") -> "Predictor":
        """Load a checkpoint directory written by :meth:`save` (or by training).

        The encoder is rebuilt from the recorded spec unless given; for ``"llm"`` pass ``encoder``
        or the LLM's ``embedding`` and ``tokenizer``. Raises ``FileNotFoundError`` for a missing
        file and ``ValueError`` for another format or an encoder with other weights.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise UserFileNotFoundError(f"{directory} is not a predictor checkpoint: no {name}")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
            raise UserError(f"{directory / CONFIG_FILE}: not a {CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION} checkpoint")
        config = PredictorConfig.from_dict(meta.pop("predictor"))
        enc_meta = meta.pop("encoder")
        meta.pop("format"), meta.pop("version"), meta.pop("num_parameters", None)
        if encoder is None:
            encoder = load_encoder(config.encoder, max_tokens=config.encoder_max_tokens, embedding=embedding,
                                   tokenizer=tokenizer, llm_name=config.llm_name)
        if _fingerprint_of(encoder.identity()) != _fingerprint_of(enc_meta["identity"]):
            raise UserError(f"{directory} was trained with encoder {enc_meta['identity']}; the encoder given is "
                             f"{encoder.identity()} (other weights)")
        predictor = cls(config, encoder, metadata=meta)
        predictor.net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return predictor.to(device).eval()


def load_predictor(checkpoint: str | os.PathLike, *, embedding: nn.Module | None = None,
                   tokenizer: Callable | None = None):
    """A predictor by name: ``"default"`` (the one shipped for the default model, best on
    validation: :meth:`Predictor.load_default`), ``"default-segments"`` (the shipped segment
    predictor), a scorer checkpoint folder (its ``config.json`` says ``polar-scorer``; it remembers
    its folder, where ``selection.json`` lies) or a segment predictor folder (``embedding`` and
    ``tokenizer``: the LLM's, for an ``llm`` encoder). :class:`polar.UserFileNotFoundError` /
    :class:`polar.UserError` for a missing or foreign checkpoint."""
    if str(checkpoint) in ("default", "default-segments"):
        return Predictor.load_default(head="segments" if str(checkpoint) == "default-segments" else "auto",
                                      embedding=embedding, tokenizer=tokenizer)
    if is_scorer_checkpoint(checkpoint):
        return Scorer.load(checkpoint)
    return Predictor.load(checkpoint, embedding=embedding, tokenizer=tokenizer)
