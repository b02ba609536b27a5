"""DR.LLM (Heakl et al. 2025, parameterlab/dr-llm): per-layer skip / run / repeat routers.

Router ``l`` reads the hidden states entering layer ``l`` (``[B, T, d]``), pools them over the
prompt's real tokens in up to ``W = windows`` windows, applies ``Linear(d, 128) -> GELU ->
Linear(128, 3)`` to every window mean and averages the windows' logits; ``argmax`` is the decision
(0 skip, 1 run once, 2 run twice). Windows: a row with ``n`` real tokens gets ``w = min(W, n)``
windows; real token ``r`` (``0 .. n-1``, in order) belongs to window ``floor(r w / n)``, so the
windows partition the prompt (the reference code drops the last ``n mod w`` tokens instead)::

    n = 10, W = 4: windows of tokens [0 1 2] [3 4] [5 6 7] [8 9]

Decisions are per row of the batch, from that row's own tokens (the reference reads row 0 only).

Labels (:func:`label_problems`): for each search record with a valid program, its best program,
the shortest valid one (ties: the first in the search's order), gives ``label[l]`` = how many times
layer ``l`` runs, clipped to 2. A program whose layers do not ascend (a reordering, or a block
repeat such as ``4 5 4 5``, which a per-layer router cannot express) cannot be labelled: such
problems are counted in :class:`LabelReport`, never dropped silently.

Loss (:func:`focal_loss`): focal loss with ``gamma`` and class weights from the effective number of
samples (:func:`class_weights`, Cui et al. 2019) of the training labels' class counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._config import DrLLMConfig

#: Classes of a DR.LLM decision.
NUM_CLASSES = 3


def window_means(hidden: torch.Tensor, attention_mask: torch.Tensor, windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of ``hidden`` ``[B, T, d]`` over up to ``windows`` windows of each row's real tokens
    (``attention_mask`` ``[B, T]``; see the module docstring): ``([B, W, d] float32, valid [B, W] bool)``;
    invalid windows (a row with fewer than ``W`` real tokens) are zero."""
    mask = attention_mask.bool()                                                # [B, T]
    n = mask.sum(-1, keepdim=True)                                              # [B, 1]
    w = n.clamp(max=windows)                                                    # [B, 1] windows per row
    rank = mask.long().cumsum(-1) - 1                                           # [B, T] real-token index
    wid = torch.div(rank.clamp(min=0) * w, n.clamp(min=1), rounding_mode="floor")  # [B, T]
    onehot = F.one_hot(wid.clamp(max=windows - 1), windows).float() * mask[..., None]  # [B, T, W]
    sizes = onehot.sum(1)                                                       # [B, W]
    means = torch.einsum("btw,btd->bwd", onehot, hidden.float()) / sizes.clamp(min=1)[..., None]  # [B, W, d]
    return means, sizes > 0


class DrLLMRouter(nn.Module):
    """DR.LLM's routers for a ``D``-layer model; a :class:`polar.Router` (``decide``).

    ``forward(features, valid)``: window means ``[B, D, W, d]`` (the states entering each layer,
    pooled) and ``valid`` ``[B, W]`` -> logits ``[B, D, 3]``. ``decide(layer, hidden, mask)`` ->
    ``LongTensor [B]`` on the hidden states' device.
    """

    kind = "drllm"

    def __init__(self, config: DrLLMConfig, metadata: dict[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.metadata: dict[str, Any] = dict(metadata or {})
        d, h = config.hidden_size, config.bottleneck
        self.routers = nn.ModuleList(
            nn.Sequential(nn.Linear(d, h), nn.GELU(approximate="tanh"), nn.Linear(h, NUM_CLASSES))
            for _ in range(config.num_layers))

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def layer_logits(self, layer: int, means: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Router ``layer`` on window means ``[B, W, d]`` (``valid`` ``[B, W]``): logits ``[B, 3]``,
        the mean of the valid windows' logits."""
        w = next(self.parameters())
        logits = self.routers[layer](means.to(w.device, w.dtype))               # [B, W, 3]
        v = valid.to(logits.device, logits.dtype)[..., None]                    # [B, W, 1]
        return (logits * v).sum(1) / v.sum(1).clamp(min=1)                      # [B, 3]

    def forward(self, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.layer_logits(l, features[:, l], valid) for l in range(self.num_layers)], 1)

    @torch.no_grad()
    def decide(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` ``[B, T, d]`` entering ``layer``, ``attention_mask`` ``[B, T]`` -> decisions ``[B]``."""
        means, valid = window_means(hidden, attention_mask, self.config.windows)
        return self.layer_logits(layer, means, valid).argmax(-1).to(hidden.device)


# ----------------------------------------------------------------------------------- labels


@dataclass
class LabelReport:
    """How the search records became labels."""

    records: int = 0  # search records read
    labelled: int = 0  # problems with a label
    no_valid: int = 0  # records without any valid program
    reordered: int = 0  # best program's layers do not ascend (reorder or block repeat): not labelled
    clipped: int = 0  # labelled problems whose best program runs some layer more than twice (clipped to 2)
    class_counts: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)  # labels per class, all layers

    def summary(self) -> str:
        return (f"{self.labelled} of {self.records} problems labelled; {self.no_valid} without a valid program, "
                f"{self.reordered} whose best program reorders layers (not labelled), {self.clipped} clipped to 2 "
                f"runs; class counts skip/run/repeat {self.class_counts}")

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def best_program(valid_programs: Sequence[Sequence[int]]) -> list[int] | None:
    """The shortest valid program (ties: the first), or ``None`` when there is none."""
    best = None
    for p in valid_programs:
        if len(p) and (best is None or len(p) < len(best)):
            best = list(p)
    return best


def program_label(program: Sequence[int], num_layers: int) -> tuple[list[int] | None, bool]:
    """``(label, clipped)``: runs per layer ``[D]`` clipped to 2, or ``None`` when the layers do not
    ascend (``[0, 1, 1, 3]`` -> ``[1, 2, 0, 1]``; ``[0, 1, 0, 1]`` -> ``None``). ``ValueError`` for a
    layer outside ``[0, num_layers)``."""
    counts = [0] * num_layers
    prev = -1
    for layer in map(int, program):
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer {layer} outside [0, {num_layers})")
        if layer < prev:
            return None, False
        counts[layer] += 1
        prev = layer
    clipped = any(c > 2 for c in counts)
    return [min(c, 2) for c in counts], clipped


@dataclass(frozen=True)
class LabelledProblem:
    """A training example of DR.LLM: the record's problem and its label ``[D]`` (runs per layer)."""

    record: dict
    label: tuple[int, ...]


def label_problems(records: Sequence[dict], num_layers: int) -> tuple[list[LabelledProblem], LabelReport]:
    """Labels from search records (``final_valid_transitions``), see the module docstring."""
    report = LabelReport(records=len(records))
    out = []
    for rec in records:
        best = best_program(rec.get("final_valid_transitions") or [])
        if best is None:
            report.no_valid += 1
            continue
        try:
            label, clipped = program_label(best, num_layers)
        except ValueError as err:
            raise ValueError(f"search record {rec.get('id')!r}: {err} (another model's results?)") from None
        if label is None:
            report.reordered += 1
            continue
        report.labelled += 1
        report.clipped += int(clipped)
        for c in label:
            report.class_counts[c] += 1
        out.append(LabelledProblem(rec, tuple(label)))
    return out, report


# ----------------------------------------------------------------------------------- loss


def class_weights(counts: Sequence[int], beta: float) -> torch.Tensor:
    """Class weights from the effective number of samples: ``E_c = (1 - beta^n_c) / (1 - beta)``,
    ``w_c = (1 / E_c) / sum_{c'} (1 / E_c') * C`` over the ``C`` classes present (``n_c > 0``); a class
    without samples gets weight 0. ``beta = 0`` gives equal weights. Returns ``[len(counts)]`` float32."""
    n = torch.tensor(list(counts), dtype=torch.float64)
    effective = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n)) / (1.0 - beta)
    inv = torch.where(n > 0, 1.0 / effective.clamp(min=1e-12), torch.zeros_like(n))
    present = int((n > 0).sum())
    return (inv / inv.sum().clamp(min=1e-12) * present).float()


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None,
               gamma: float = 2.0) -> torch.Tensor:
    """Mean over the ``N`` decisions of ``w[y] (1 - p_y)^gamma (-log p_y)``, ``p = softmax(logits)``:
    ``logits`` ``[N, C]``, ``targets`` ``[N]`` long, ``weights`` ``[C]`` (None: 1)."""
    logp = F.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)  # [N]
    loss = (1.0 - logp.exp()).pow(gamma) * -logp                                # [N]
    if weights is not None:
        loss = loss * weights.to(loss.device)[targets]
    return loss.mean()
