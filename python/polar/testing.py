"""Tiny random-weight models of each supported architecture, built in code (tests, benchmarks)."""
from __future__ import annotations

import torch

ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe")


def tiny_config(arch: str, num_layers: int = 6, vocab_size: int = 128, hidden_size: int = 64,
                num_heads: int = 4, num_kv_heads: int = 2, **overrides):
    """A small config of architecture ``arch`` (GQA, biases/q-k norms/MoE as the family has them)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  num_key_value_heads=num_kv_heads, max_position_embeddings=512, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        cfg = tf.LlamaConfig(**common)
    elif arch == "mistral":  # a small sliding window so that tests exercise it
        cfg = tf.MistralConfig(**common, sliding_window=5, head_dim=hidden_size // num_heads)
    elif arch == "qwen2":  # q/k/v biases
        cfg = tf.Qwen2Config(**common)
    elif arch == "qwen3":  # q/k norms, explicit head_dim
        cfg = tf.Qwen3Config(**common, head_dim=24)
    elif arch == "qwen2_moe":  # sparse MLP with shared expert
        cfg = tf.Qwen2MoeConfig(**common, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                shared_expert_intermediate_size=48, decoder_sparse_step=1)
    elif arch == "qwen3_moe":  # q/k norms + sparse MLP
        cfg = tf.Qwen3MoeConfig(**common, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                decoder_sparse_step=1)
    else:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32,
               attn_implementation: str = "sdpa", **config_overrides):
    """A seeded random-weight causal LM of architecture ``arch`` in eval mode."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation, dtype=dtype)
    return model.eval()


def tiny_tokenizer(vocab_size: int = 128):
    """A word-level fast tokenizer over ``vocab_size`` tokens ``<pad> <s> </s> w3 w4 ..`` (ids 0, 1, 2, ...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
