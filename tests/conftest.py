import pytest
import torch

from polar.testing import ARCHITECTURES, tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="session", params=ARCHITECTURES)
def arch_model(request):
    """A tiny random model of each supported architecture (session-scoped: built once)."""
    return tiny_model(request.param, seed=1)


def padded_batch(prompts: list[torch.Tensor], side: str, pad_id: int = 0) -> dict:
    """Pad 1-D id tensors on ``side`` ('left' or 'right') into input_ids/attention_mask."""
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for r, p in enumerate(prompts):
        if side == "left":
            ids[r, T - len(p):], mask[r, T - len(p):] = p, 1
        else:
            ids[r, : len(p)], mask[r, : len(p)] = p, 1
    return {"input_ids": ids, "attention_mask": mask}


def random_prompts(n: int, vocab: int, lo: int, hi: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(3, vocab, (L,), generator=g) for L in lengths]


def mixed_programs(D: int, n: int, seed: int) -> list[list[int]]:
    """Programs with skips, single-layer repeats, segment repeats, reorders, and the full pass."""
    g = torch.Generator().manual_seed(seed)
    kinds = [
        lambda: list(range(D)),
        lambda: [i for i in range(D) if torch.rand(1, generator=g).item() > 0.4] or [0],  # skips
        lambda: sorted(list(range(D)) + [int(torch.randint(D, (1,), generator=g))]),  # one layer twice
        lambda: list(range(D // 2 + 1)) + list(range(1, D)),  # a segment repeated
        lambda: list(range(D - 1, -1, -1))[: D // 2] + [0, 1],  # reordered
        lambda: [int(x) for x in torch.randint(D, (int(torch.randint(1, 2 * D, (1,), generator=g)),), generator=g)],
    ]
    return [kinds[r % len(kinds)]() for r in range(n)]
