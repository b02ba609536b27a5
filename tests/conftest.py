import pytest
import torch

from polar.testing import ARCHITECTURES, tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="session", params=ARCHITECTURES)
def arch_model(request):
    """A tiny random model of each supported architecture (session-scoped: built once)."""
    return tiny_model(request.param, seed=1)
