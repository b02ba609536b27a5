"""The PoLar predictor network (paper section 3.2; docs/architecture.md section 11), top to bottom.

    encoder tokens [B, T, e] --Linear--> [B, T, d]
    D learned layer queries [D, d] cross-attend to the tokens (padding masked) -> [B, D, d]
    n_blocks transformer blocks over the D layer vectors                       -> [B, D, d]
    heads: boundary logits [B, D] (layer i starts a segment) and op logits [B, D, C],
           C = max_runs + 1 (run the segment 0 (skip), 1 (keep), 2 (repeat), ... times;
           read at segment starts)

The frozen text encoder is not part of this module (see ``_encoder.py``); the network sees its
token vectors and a padding mask. Tokens carry no positions here: the result depends only on the
set of real token vectors, not on how much padding a row gets or on which side.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._config import PredictorConfig


class Attention(nn.Module):
    """Multi-head attention of queries ``x`` over ``memory`` (cross) or over ``x`` itself (self)."""

    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.d, cfg.d)
        self.kv = nn.Linear(cfg.d, 2 * cfg.d)
        self.out = nn.Linear(cfg.d, cfg.d)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, Q, d], ``memory`` [B, T, d], ``key_mask`` [B, T] bool (True = real token) -> [B, Q, d]."""
        B, Q, d = x.shape
        T, H = memory.shape[1], self.n_heads
        q = self.q(x).view(B, Q, H, d // H).transpose(1, 2)  # [B, H, Q, d/H]
        k, v = self.kv(memory).split(d, dim=-1)  # [B, T, d] each
        k = k.view(B, T, H, d // H).transpose(1, 2)  # [B, H, T, d/H]
        v = v.view(B, T, H, d // H).transpose(1, 2)  # [B, H, T, d/H]
        mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, T]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # [B, H, Q, d/H]
        y = y.transpose(1, 2).reshape(B, Q, d)  # [B, Q, d]
        return self.resid_dropout(self.out(y))  # [B, Q, d]


class MLP(nn.Module):
    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d, cfg.mlp_ratio * cfg.d)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d, cfg.d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))  # [B, D, d]


class Block(nn.Module):
    """Pre-norm transformer block over the D layer vectors (no mask: every layer sees every layer)."""

    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d)
        self.mlp = MLP(cfg)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.ln_1(h)  # [B, D, d]
        h = h + self.attn(a, a)  # [B, D, d]
        h = h + self.mlp(self.ln_2(h))  # [B, D, d]
        return h


class PolarNet(nn.Module):
    """Boundary and op logits for ``D = cfg.num_layers`` layers from encoder token vectors."""

    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        if cfg.encoder_dim is None:
            raise ValueError("PredictorConfig.encoder_dim is unset; fill it from the encoder (encoder.dim)")
        self.cfg = cfg
        self.proj = nn.Linear(cfg.encoder_dim, cfg.d)  # encoder width e -> d
        self.ln_tokens = nn.LayerNorm(cfg.d)  # keys/values of the cross-attention
        self.layer_queries = nn.Parameter(torch.randn(cfg.num_layers, cfg.d) * 0.02)  # one query per layer
        self.ln_queries = nn.LayerNorm(cfg.d)
        self.cross = Attention(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_blocks))
        self.ln_f = nn.LayerNorm(cfg.d)
        self.seg_head = nn.Linear(cfg.d, 1)  # boundary logit per layer
        self.op_head = nn.Linear(cfg.d, cfg.max_runs + 1)  # logits of running a segment 0..max_runs times, per layer
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith("out.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * max(1, cfg.n_blocks + 1)))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` [B, T, e] float, ``mask`` [B, T] bool (True = real token; every row needs one).

        Returns ``(seg_logits [B, D], op_logits [B, D, C])`` with ``C = max_runs + 1`` (skip, keep,
        repeat, three runs, ...). Raises ``ValueError`` on a shape mismatch or a row without real
        tokens (its attention would be undefined).
        """
        B, T, e = tokens.shape
        if e != self.cfg.encoder_dim or mask.shape != (B, T):
            raise ValueError(f"expected tokens [B, T, {self.cfg.encoder_dim}] and mask [B, T], got "
                             f"{tuple(tokens.shape)} and {tuple(mask.shape)}")
        mask = mask.to(torch.bool)
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"rows {empty} have no real tokens; every question needs at least one")
        x = self.ln_tokens(self.proj(tokens))  # [B, T, d]
        q = self.layer_queries.unsqueeze(0).expand(B, -1, -1)  # [B, D, d]
        h = q + self.cross(self.ln_queries(q), x, key_mask=mask)  # [B, D, d]
        for block in self.blocks:
            h = block(h)  # [B, D, d]
        h = self.ln_f(h)  # [B, D, d]
        seg_logits = self.seg_head(h).squeeze(-1)  # [B, D]
        op_logits = self.op_head(h)  # [B, D, C]
        return seg_logits, op_logits

    def num_parameters(self) -> int:
        """Trainable parameters (the frozen encoder is not part of this module)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
