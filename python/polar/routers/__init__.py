"""Online routers (docs/architecture.md section 15): the paper's learned dynamic-depth baselines.

Each router is a :class:`polar.Router` for the routed engine (``polar.batched_execute(model, None,
inputs, router=R)``, ``polar.generate(model, tok, inputs, None, ..., router=R)``):

- :class:`DrLLMRouter` (DR.LLM, parameterlab/dr-llm): per layer and row, skip / run once / run
  twice, from window-pooled hidden states; trained on labels from our search results.
- :class:`MindSkipRouter` (router-tuning): per layer and row, an attention gate decided over the
  prompt (``LayerGates.attention``); trained with the LM loss.
- :class:`FlexiDepthRouter` (FlexiDepth): per layer and token, run the layer or an adapter
  (``LayerGates.token``); trained with the LM loss and a layer-usage penalty.

Training (``polar train-router``): :func:`train_router` with a :class:`RouterRun`; lower level
:func:`fit_drllm` / :func:`fit_gated` on prepared examples. Checkpoints: :func:`load_router`
(folder with ``router.safetensors`` + ``config.json``).

Example::

    from polar.routers import RouterRun, load_router, train_router
    train_router(RouterRun(kind="drllm", search=("results/search/skip_loop/L1.jsonl",)), "runs/drllm")
    router = load_router("runs/drllm", model)
    out = polar.generate(model, tok, prompts, None, max_new_tokens=20, router=router)
    out.programs                     # each row's decided program
"""
from ._checkpoint import ROUTER_FORMAT, load_router, read_config, save_router
from ._config import (ROUTER_KINDS, DrLLMConfig, FlexiDepthConfig, MindSkipConfig, RouterRun, RouterTrainConfig,
                      flexidepth_layers, mindskip_layers)
from ._data import DrLLMExample, LMExample, drllm_examples, lm_examples
from ._drllm import (DrLLMRouter, LabelReport, best_program, class_weights, focal_loss, label_problems,
                     program_label, window_means)
from ._flexidepth import FlexiDepthRouter, usage_penalty
from ._forward import forward_hidden, lm_loss
from ._mindskip import MindSkipRouter
from ._train import drllm_features, fit_drllm, fit_gated, gated_loss, train_router

__all__ = [
    "ROUTER_FORMAT", "ROUTER_KINDS", "DrLLMConfig", "DrLLMExample", "DrLLMRouter", "FlexiDepthConfig",
    "FlexiDepthRouter", "LMExample", "LabelReport", "MindSkipConfig", "MindSkipRouter", "RouterRun",
    "RouterTrainConfig", "best_program", "class_weights", "drllm_examples", "drllm_features", "fit_drllm",
    "fit_gated", "flexidepth_layers", "focal_loss", "forward_hidden", "gated_loss", "label_problems",
    "lm_examples", "lm_loss", "load_router", "mindskip_layers", "program_label", "read_config", "save_router",
    "train_router", "usage_penalty", "window_means",
]
