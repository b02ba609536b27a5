"""Sampling draws from the exact truncated softmax: temperature, top_k and top_p (chi-square tests)."""
import numpy as np
import pytest
import torch
from scipy.stats import chi2

import polar
from polar.runtime.generation import select_tokens
from polar.testing import tiny_model

DRAWS = 6000


@pytest.fixture(scope="module")
def logits():
    """A tiny model's next-token logits for one prompt, sharpened so the distribution is far from uniform."""
    model = tiny_model(seed=4, num_layers=2)
    out = polar.batched_execute(model, polar.full(2), torch.tensor([[5, 6, 7, 8]]))
    return out.logits[0].float() * 6.0  # [V]


def exact(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """The distribution select_tokens should draw from, computed independently in float64."""
    z = logits.double().numpy() / temperature
    keep = np.ones_like(z, dtype=bool)
    if top_k > 0:
        keep &= z >= np.sort(z)[-top_k]
    p = np.where(keep, np.exp(z - z[keep].max()), 0.0)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]  # mass of the tokens ranked above each one
        kept = order[before < top_p]              # the smallest prefix whose mass reaches top_p
        mask = np.zeros_like(keep)
        mask[kept] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.5, 0, 1.0), (1.0, 5, 1.0), (0.8, 3, 1.0),
    (1.0, 0, 0.6), (1.3, 0, 0.9), (1.0, 8, 0.7)])
def test_draws_follow_the_truncated_softmax(logits, temperature, top_k, top_p):
    want = exact(logits, temperature, top_k, top_p)
    rows = logits[None].expand(DRAWS, -1)
    drawn = select_tokens(rows, True, temperature, top_p, top_k, torch.Generator().manual_seed(11)).numpy()
    counts = np.bincount(drawn, minlength=len(want))
    assert counts[want == 0].sum() == 0, "a token outside the truncated support was drawn"
    support = want > 0
    expected = want[support] * DRAWS
    # cells with a small expectation are pooled, so the chi-square approximation holds
    small = expected < 5
    obs = np.append(counts[support][~small], counts[support][small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = ((obs - exp) ** 2 / exp).sum()
    df = max(len(exp) - 1, 1)
    assert stat < chi2.ppf(0.999, df), (stat, df)
    assert support.sum() >= 2  # every setting here leaves a real choice


def test_per_row_generators_draw_each_row_independently_of_the_batch(logits):
    rows = logits[None].expand(4, -1)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3, 4)]
    together = select_tokens(rows, True, 1.0, 1.0, 0, gens)
    alone = [select_tokens(rows[:1], True, 1.0, 1.0, 0, [torch.Generator().manual_seed(s)])[0] for s in (1, 2, 3, 4)]
    assert together.tolist() == [int(t) for t in alone]
