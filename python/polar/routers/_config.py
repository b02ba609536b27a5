"""Settings of the routers: one network config per kind (written to a checkpoint's ``config.json``)
and one training config (recorded beside it). Every default lives here and nowhere else.

- :class:`DrLLMConfig`: DR.LLM's per-layer skip / run / repeat classifiers.
- :class:`MindSkipConfig`: router-tuning's per-layer attention gates (whole-sequence decisions).
- :class:`FlexiDepthConfig`: FlexiDepth's per-token layer gates with adapters.
- :class:`RouterTrainConfig`: AdamW with warmup and cosine decay, resumable state, the losses' knobs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._checks import check_int
from ..errors import UserError

#: The router kinds ``polar train-router --kind`` trains and :func:`polar.routers.load_router` loads.
ROUTER_KINDS: tuple[str, ...] = ("drllm", "mindskip", "flexidepth")

#: MindSkip gates the attention of the last this many layers, the final layer excepted (router-tuning's
#: ``ROUTER_LAYERS=16``).
MINDSKIP_LAST_LAYERS = 16


def mindskip_layers(num_layers: int, last: int = MINDSKIP_LAST_LAYERS) -> tuple[int, ...]:
    """The layers MindSkip gates: the last ``last`` layers except the final one, e.g. ``D = 30`` ->
    ``13 .. 28``; ``D = 6`` -> ``0 .. 4``."""
    return tuple(range(max(0, num_layers - 1 - last), num_layers - 1))


def flexidepth_layers(num_layers: int) -> tuple[int, ...]:
    """The layers FlexiDepth gates: the later half, e.g. ``D = 30`` -> ``15 .. 29``; ``D = 6`` -> ``3 .. 5``."""
    return tuple(range(num_layers - num_layers // 2, num_layers))


def _check_layers(layers, num_layers: int, what: str) -> tuple[int, ...]:
    out = tuple(int(i) for i in layers)
    if not out or any(not 0 <= i < num_layers for i in out) or len(set(out)) != len(out):
        raise UserError(f"{what} must be distinct layer indices in [0, {num_layers}), got {list(out)}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class DrLLMConfig:
    """DR.LLM (parameterlab/dr-llm): router ``l`` is ``Linear(d, bottleneck) -> GELU -> Linear(bottleneck, 3)``
    on the state entering layer ``l``, mean-pooled over up to ``windows`` windows of the prompt's real
    tokens, the windows' logits averaged; classes 0 skip, 1 run once, 2 run twice."""

    num_layers: int  # D: decoder layers of the base model (one router each)
    hidden_size: int  # d: width of the base model's hidden states
    bottleneck: int = 128  # hidden width of each router's MLP
    windows: int = 8  # most windows the prompt is cut into (fewer for prompts shorter than this)

    def __post_init__(self) -> None:
        check_int(self.num_layers, "num_layers")
        check_int(self.hidden_size, "hidden_size")
        check_int(self.bottleneck, "bottleneck")
        check_int(self.windows, "windows")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MindSkipConfig:
    """MindSkip (router-tuning, He et al. 2024): for each gated layer, ``Linear(d, 1, bias=False)`` on
    the layer's input-normed hidden state mean-pooled over the prompt's real tokens; gate
    ``1[sigmoid(.) >= threshold]`` multiplies the attention output (straight-through in training)."""

    num_layers: int  # D: decoder layers of the base model
    hidden_size: int  # d: width of the base model's hidden states
    layers: tuple[int, ...] = ()  # gated layers (empty: mindskip_layers(D))
    threshold: float = 0.5  # the gate is open when sigmoid(router logit) >= threshold
    norm_eps: float = 1e-6  # epsilon of the copied input RMSNorms (the base model's)

    def __post_init__(self) -> None:
        check_int(self.num_layers, "num_layers")
        check_int(self.hidden_size, "hidden_size")
        layers = self.layers or mindskip_layers(self.num_layers)
        object.__setattr__(self, "layers", _check_layers(layers, self.num_layers, "MindSkip layers"))
        if not 0.0 < self.threshold < 1.0:
            raise UserError(f"threshold must be in (0, 1), got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"layers": list(self.layers)}


@dataclass(frozen=True)
class FlexiDepthConfig:
    """FlexiDepth (Luo et al. 2025): for each gated layer a per-token gate
    ``g = sigmoid(W_up tanh(W_down rmsnorm(x)))`` (bottleneck ``router_dim``); a token with
    ``g >= threshold`` runs the layer with its update scaled by ``g``; the others skip the attention
    query and the MLP (their keys/values are still computed) and take ``x + (1 - g) * adapter(x)``,
    ``adapter`` a small SwiGLU MLP (width ``adapter_dim``) on its own RMSNorm."""

    num_layers: int  # D: decoder layers of the base model
    hidden_size: int  # d: width of the base model's hidden states
    intermediate_size: int  # width of the base model's MLP (sets the adapter's default width)
    layers: tuple[int, ...] = ()  # gated layers (empty: flexidepth_layers(D), the later half)
    router_dim: int = 0  # bottleneck of the router (0: max(1, d // 16))
    adapter_dim: int = 0  # hidden width of the adapter (0: max(1, intermediate_size // 16))
    threshold: float = 0.5  # a token runs the layer when g >= threshold
    init_gate_logit: float = 3.0  # initial bias of the router's output: gates start open (g = 0.95)
    norm_eps: float = 1e-6  # epsilon of the router's and the adapter's RMSNorms

    def __post_init__(self) -> None:
        check_int(self.num_layers, "num_layers")
        check_int(self.hidden_size, "hidden_size")
        check_int(self.intermediate_size, "intermediate_size")
        layers = self.layers or flexidepth_layers(self.num_layers)
        object.__setattr__(self, "layers", _check_layers(layers, self.num_layers, "FlexiDepth layers"))
        object.__setattr__(self, "router_dim", self.router_dim or max(1, self.hidden_size // 16))
        object.__setattr__(self, "adapter_dim", self.adapter_dim or max(1, self.intermediate_size // 16))
        check_int(self.router_dim, "router_dim")
        check_int(self.adapter_dim, "adapter_dim")
        if not 0.0 < self.threshold < 1.0:
            raise UserError(f"threshold must be in (0, 1), got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"layers": list(self.layers)}


#: The network config class of each kind.
CONFIG_CLASSES = {"drllm": DrLLMConfig, "mindskip": MindSkipConfig, "flexidepth": FlexiDepthConfig}


def config_from_dict(kind: str, data: dict[str, Any]):
    """The network config of ``kind`` from its ``to_dict()``; :class:`polar.UserError` for an unknown
    kind or field."""
    if kind not in CONFIG_CLASSES:
        raise UserError(f"unknown router kind {kind!r}; expected one of {', '.join(ROUTER_KINDS)}")
    cls = CONFIG_CLASSES[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"unknown {cls.__name__} fields: {unknown}")
    data = dict(data)
    if "layers" in data:
        data["layers"] = tuple(data["layers"])
    return cls(**data)


@dataclass(frozen=True)
class RouterTrainConfig:
    """How a router is trained (every kind): AdamW, linear warmup, cosine decay; the base model frozen."""

    epochs: int = 10  # passes over the training examples
    batch_size: int = 16  # examples per optimizer step
    lr: float = 1e-3  # peak AdamW learning rate (DR.LLM's)
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_frac: float = 0.05  # share of all steps spent warming the learning rate up linearly
    min_lr_ratio: float = 0.0  # the cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    save_every: int = 50  # write the resumable state every this many steps (and at the end)
    val_fraction: float = 0.1  # share of examples (by id hash) held out for the logged validation metrics
    focal_gamma: float = 2.0  # DR.LLM: focal loss exponent
    class_beta: float = 0.999  # DR.LLM: beta of the effective number of samples behind the class weights
    alpha: float = 1e-3  # FlexiDepth: weight of the layer-usage penalty mean_t (sum_l g_lt)^2
    max_tokens: int = 512  # MindSkip/FlexiDepth: examples longer than this (prompt + answer) are cut on the left

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "save_every", "max_tokens"):
            check_int(getattr(self, name), name)
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise UserError("lr must be positive; weight_decay and grad_clip non-negative")
        if not 0.0 <= self.warmup_frac < 1.0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise UserError("warmup_frac must be in [0, 1) and min_lr_ratio in [0, 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.focal_gamma < 0 or not 0.0 <= self.class_beta < 1.0 or self.alpha < 0:
            raise UserError("focal_gamma and alpha must be >= 0 and class_beta in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RouterRun:
    """One ``polar train-router`` run: what to train, on what, for which model (checked before compute)."""

    kind: str  # one of ROUTER_KINDS
    search: tuple[str, ...] = ()  # DR.LLM: search results files (labels from each problem's best valid program)
    data: tuple[str, ...] = ()  # MindSkip/FlexiDepth: --data specs of training problems (prompt + gold answer)
    model: str = "default"  # the base model (polar.load_model)
    prompt_style: str | None = None  # prompt style (None: the search records' for DR.LLM, else the default)
    limit: int | None = None  # first N records of each --search file / problems of each --data spec
    seed: int = 0  # seed of the router's initialisation, the batch order and the validation split
    device: str | None = None  # where the base model and the router run
    train: RouterTrainConfig = field(default_factory=RouterTrainConfig)  # optimisation

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", tuple(str(s) for s in self.search))
        object.__setattr__(self, "data", tuple(str(s) for s in self.data))
        if self.kind not in ROUTER_KINDS:
            raise UserError(f"unknown router kind {self.kind!r}; expected one of {', '.join(ROUTER_KINDS)}")
        if self.kind == "drllm":
            if self.data or not self.search:
                raise UserError("--kind drllm learns from search results: give --search FILES (not --data)")
        elif self.search or not self.data:
            raise UserError(f"--kind {self.kind} is trained with the LM loss on problems: give --data SPEC "
                            f"(not --search)")
        check_int(self.limit, "limit", optional=True)

    def settings(self) -> dict[str, Any]:
        """What changes the trained router (a rerun with other settings is refused)."""
        out = asdict(self)
        out["search"], out["data"] = list(self.search), list(self.data)
        out.pop("device")
        return out
