"""One-call GPU check of every execution path (driver of ``bench/gpu_check.sh``; run that script).

Sections, each timed and recorded even when another fails (results are written after each one):

1. ``env``: device, versions.
2. ``ceilings``: device-to-device copy bandwidth (bytes read + written), ``torch.mm`` peak (bf16
   and fp32 without TF32).
3. ``kernels_vs_reference``: every case of ``tests/runtime/test_kernels.py`` (rmsnorm, scatter, slot
   and pool decode attention) compiled on the device against its torch reference.
4. ``correctness``: CUDA against CPU on the same models and inputs: every tiny architecture of
   ``polar.testing`` and a SmolLM2-135M-shaped model (the real weights when ``polar.models`` has them
   cached, else random weights), fp32. CPU reference: ``backend="hf"``, ``share_prefix=False``.
   CUDA: ``batched_execute`` logits and ``generate`` tokens for hf/fused x shared/unshared, the prefix
   cache (a second call that reuses the first's states), online routers when
   ``polar.runtime.routing`` exists (``ReplayRouter`` and the learned routers of ``polar.routers``,
   randomly initialised), and SmolLM2 in bf16 (reported, not required to match exactly).
5. ``throughput``: SmolLM2 shapes in bf16 (the batches of ``bench/``: programs from
   ``bench/programs.py``, 64-token prompts): prefill and decode row-layer throughput of each
   variant against the fixed-depth HF forward and HF ``generate``, achieved FLOP/s against the
   measured ``torch.mm`` peak (large and same-shape), decode weight traffic against copy bandwidth;
   a shared-prefix workload (long common prompt prefix) and the prefix cache; routed prefill.
6. ``kernel_bench``: each kernel's time against a copy of the same bytes (the bandwidth bound),
   for pool attention with and without a shared prefix (cascade on and off), slot attention,
   rmsnorm and scatter.

``--cpu-smoke``: everything on CPU at tiny sizes, two tiny architectures (the "device" side runs the Triton kernels under
the interpreter, ``polar_kernels.triton_on_cpu()``; needs ``TRITON_INTERPRET=1``, which the shell
script sets), to check that the script works before a GPU is lent. Without it, CUDA must be there.

Output: ``<out>/<device>.json`` and ``<out>/<device>.md`` (default ``bench/gpu_results/``), and a
copy in ``$OUT`` when that variable is set (the device tool brings back only ``$OUT``).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import polar  # noqa: E402
import polar_kernels as pk  # noqa: E402
from polar.runtime import PrefixCache  # noqa: E402
from polar.testing import ARCHITECTURES, mixed_programs, padded_batch, tiny_model  # noqa: E402

from programs import random_prompts as bench_prompts  # noqa: E402
from programs import sample_programs  # noqa: E402

SMOLLM2_SHAPES = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True,
                      rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)

SIZES = {
    "gpu": dict(archs=ARCHITECTURES, tiny_layers=4, corr_new=8, corr_shared=24, big=True, thr_B=(32, 128), thr_T=64, thr_new=32,
                share_B=64, share_prefix=192, share_tail=32, share_new=16, reps=3, copy_mb=1024, mm_n=8192,
                mm_n32=4096, kernel_scale=1),
    "smoke": dict(archs=("llama", "qwen3"), tiny_layers=2, corr_new=2, corr_shared=16, big=False, thr_B=(4,), thr_T=8, thr_new=3,
                  share_B=4, share_prefix=16, share_tail=2, share_new=2, reps=1, copy_mb=8, mm_n=128,
                  mm_n32=128, kernel_scale=0),
}


# ----------------------------------------------------------------------------------- helpers

class Check:
    """Run state: mode, device, deadline, the report (dict) and where it is written."""

    def __init__(self, args):
        self.smoke = args.cpu_smoke
        self.sz = SIZES["smoke" if self.smoke else "gpu"]
        self.device = torch.device("cpu" if self.smoke else "cuda")
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + args.budget_s
        self.out_dir = Path(args.out)
        self.report: dict = {"sections": {}, "errors": {}}
        self.name = "cpu-smoke" if self.smoke else torch.cuda.get_device_name(0)
        self.slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-").lower()

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def dev(self):
        """Context of the device side: the real GPU, or the Triton interpreter on CPU (smoke)."""
        return pk.triton_on_cpu() if self.smoke else contextlib.nullcontext()

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def section(self, name: str, fn, min_left: float = 0.0):
        if self.left() < min_left:
            self.report["errors"][name] = f"skipped: {self.left():.0f} s of the budget left (< {min_left:.0f})"
            print(f"[{name}] skipped (time budget)", flush=True)
            return
        t = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        try:
            self.report["sections"][name] = fn(self)
        except Exception as exc:  # recorded; the other sections still run
            self.report["errors"][name] = f"{exc!r}\n{traceback.format_exc()[-3000:]}"
            print(f"[{name}] FAILED: {exc!r}", flush=True)
        self.report.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t, 1)
        print(f"[{name}] {time.perf_counter() - t:.1f} s", flush=True)
        self.write()

    def write(self):
        self.report["total_seconds"] = round(time.perf_counter() - self.t0, 1)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        md = render_markdown(self.report)
        paths = [self.out_dir]
        if os.environ.get("OUT"):
            paths.append(Path(os.environ["OUT"]))
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)
            (p / f"{self.slug}.json").write_text(json.dumps(self.report, indent=1, default=str))
            (p / f"{self.slug}.md").write_text(md)


def timed(chk: Check, fn, reps: int | None = None, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` (synchronised), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    chk.sync()
    times = []
    for _ in range(reps or chk.sz["reps"]):
        t = time.perf_counter()
        fn()
        chk.sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def kernel_time(chk: Check, fn) -> float:
    """Median seconds of one kernel call (``triton.testing.do_bench`` on CUDA)."""
    if chk.device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e-3
    return timed(chk, fn, reps=3)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def token_diff(got: list[list[int]], ref: list[list[int]]) -> dict:
    """Rows with identical tokens, and the first divergence ``(row, index)`` if any."""
    first = None
    same = 0
    for r, (g, f) in enumerate(zip(got, ref)):
        if g == f:
            same += 1
        elif first is None:
            i = next((i for i, (x, y) in enumerate(zip(g, f)) if x != y), min(len(g), len(f)))
            first = {"row": r, "index": i, "got": g[i] if i < len(g) else None, "ref": f[i] if i < len(f) else None}
    return {"rows_equal": same, "rows": len(ref), "first_divergence": first}


def smollm2(dtype: torch.dtype):
    """SmolLM2-135M: the real weights when cached by ``polar.models`` (not on a bare device), else the
    same shapes with seeded random weights."""
    from polar import models

    if os.environ.get("POLAR_GPU_CHECK_RANDOM_WEIGHTS") != "1" and models.is_default_cached():
        model, _ = models.load_default()
        return model.to(dtype).eval(), "SmolLM2-135M-Instruct (real weights)"
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**SMOLLM2_SHAPES), attn_implementation="sdpa", dtype=dtype)
    return model.eval(), "SmolLM2-135M shapes, random weights"


def has_routing() -> bool:
    """Whether this checkout has online routers (``batched_execute(model, None, inputs, router=R)``)."""
    return (importlib.util.find_spec("polar.runtime.routing") is not None
            and "router" in inspect.signature(polar.batched_execute).parameters)


def to_device(inputs: dict, device) -> dict:
    return {k: v.to(device) for k, v in inputs.items()}


# ----------------------------------------------------------------------------------- sections

def sec_env(chk: Check) -> dict:
    import transformers

    env = {"device": chk.name, "mode": "cpu-smoke" if chk.smoke else "cuda", "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(),
           "triton": getattr(sys.modules.get("triton"), "__version__", None) if pk.HAS_TRITON else None,
           "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "routing": has_routing()}
    if not chk.smoke:
        p = torch.cuda.get_device_properties(0)
        env.update(sm_count=p.multi_processor_count, memory_gib=round(p.total_memory / 2 ** 30, 1),
                   capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda)
    return env


def sec_ceilings(chk: Check) -> dict:
    dev = chk.device
    n = chk.sz["copy_mb"] * 2 ** 20
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    t_copy = kernel_time(chk, lambda: dst.copy_(src))
    out = {"copy_bytes": 2 * n, "copy_s": t_copy, "copy_GBps": 2 * n / t_copy / 1e9}
    for name, dtype, m in (("bf16", torch.bfloat16, chk.sz["mm_n"]), ("fp32", torch.float32, chk.sz["mm_n32"])):
        a = torch.randn(m, m, device=dev, dtype=dtype)
        b = torch.randn(m, m, device=dev, dtype=dtype)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            t = kernel_time(chk, lambda: torch.mm(a, b))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        out[f"mm_{name}_n"] = m
        out[f"mm_{name}_TFLOPs"] = 2 * m ** 3 / t / 1e12
    return out


def _load_kernel_tests():
    spec = importlib.util.spec_from_file_location("polar_gpu_check_test_kernels", ROOT / "tests/runtime/test_kernels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sec_kernels_vs_reference(chk: Check) -> dict:
    tk = _load_kernel_tests()
    cases = {}
    for cid in tk.CASE_IDS:
        if chk.left() < 60:
            cases[cid] = {"ok": None, "msg": "skipped (time budget)"}
            continue
        try:
            cases[cid] = {"ok": True, "err": tk.run_case(cid, device=chk.device.type)}
        except Exception as exc:
            cases[cid] = {"ok": False, "msg": repr(exc)[:500]}
    ok = sum(1 for c in cases.values() if c["ok"])
    return {"passed": ok, "total": len(cases), "cases": cases}


def _corr_batch(vocab: int, D: int, shared_len: int, seed: int, routable: bool = False):
    """6 rows over a common prefix of ``shared_len`` tokens (one duplicate prompt), mixed programs."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(3, vocab, (shared_len,), generator=g)
    tails = [torch.randint(3, vocab, (n,), generator=g) for n in (3, 5, 0, 3, 7, 1)]
    prompts = [torch.cat([shared, t]) for t in tails]
    prompts[3] = prompts[0].clone()
    if routable:
        from polar.testing import routable_programs

        programs = routable_programs(D, len(prompts), seed)
    else:
        programs = mixed_programs(D, len(prompts), seed)
        programs[3] = list(programs[0])
    return prompts, programs


def _check_model(chk: Check, name: str, cpu_model, dtype=torch.float32) -> dict:
    """All paths of one model on the device against the CPU reference (hf, unshared)."""
    sz, dev = chk.sz, chk.device
    D = cpu_model.config.num_hidden_layers
    vocab = cpu_model.config.vocab_size
    dev_model = copy.deepcopy(cpu_model).to(device=dev, dtype=dtype)
    prompts, programs = _corr_batch(vocab, D, sz["corr_shared"], seed=11)
    right, left = padded_batch(prompts, "right"), padded_batch(prompts, "left")
    new = sz["corr_new"]
    gen_kw = dict(eos_token_id=[])
    ref_exec = polar.batched_execute(cpu_model, programs, right, backend="hf", share_prefix=False)
    ref_gen = polar.generate(cpu_model, None, left, programs, new, backend="hf", share_prefix=False, **gen_kw)
    res: dict = {"dtype": str(dtype).replace("torch.", ""), "paths": {}}
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    for backend in ("hf", "fused"):
        for share in (False, True):
            key = f"{backend}/{'shared' if share else 'unshared'}"
            with chk.dev():
                e = polar.batched_execute(dev_model, programs, to_device(right, dev), backend=backend, share_prefix=share)
                gres = polar.generate(dev_model, None, to_device(left, dev), programs, new, backend=backend,
                                      share_prefix=share, **gen_kw)
            lp = max((abs(a - b) for x, y in zip(gres.token_logprobs, ref_gen.token_logprobs) for a, b in zip(x, y)),
                     default=0.0)
            err = rel_err(e.logits, ref_exec.logits)
            td = token_diff(gres.tokens, ref_gen.tokens)
            res["paths"][key] = {"logits_rel_err": err, "tokens": td, "logprob_max_abs_diff": lp,
                                 "ok": err <= tol and (dtype != torch.float32 or td["first_divergence"] is None)}
    # prefix cache: a second call over the same shared prefix reuses the first call's states
    prompts2, _ = _corr_batch(vocab, D, sz["corr_shared"], seed=11)
    g2 = torch.Generator().manual_seed(5)
    prompts2 = [torch.cat([p[: sz["corr_shared"]], torch.randint(3, vocab, (4,), generator=g2)]) for p in prompts2]
    left2 = padded_batch(prompts2, "left")
    ref2 = polar.generate(cpu_model, None, left2, programs, new, backend="hf", share_prefix=False, **gen_kw)
    for backend in ("hf", "fused"):
        cache = PrefixCache(256 * 2 ** 20)
        with chk.dev():
            first = polar.generate(dev_model, None, to_device(left, dev), programs, new, backend=backend,
                                   prefix_cache=cache, **gen_kw)
            second = polar.generate(dev_model, None, to_device(left2, dev), programs, new, backend=backend,
                                    prefix_cache=cache, **gen_kw)
        td1, td2 = token_diff(first.tokens, ref_gen.tokens), token_diff(second.tokens, ref2.tokens)
        res["paths"][f"{backend}/prefix_cache"] = {
            "tokens": td2, "tokens_first_call": td1, "hits": cache.hits, "prefill_work_cached": second.prefill_work_cached,
            "ok": cache.hits > 0 and (dtype != torch.float32 or (td1["first_divergence"] is None
                                                                 and td2["first_divergence"] is None))}
    if not has_routing():
        res["routers"] = "polar.runtime.routing not in this checkout"
    elif dtype == torch.float32:  # in bf16 a router's decisions may differ from the CPU's: not compared
        res["routers"] = _check_routers(chk, cpu_model, dev_model, dtype)
    return res


def _router_factories(cpu_model):
    """(name, builder) of the online routers this checkout has; builder() -> a CPU router."""
    from polar.runtime.routing import ReplayRouter

    adapter = polar.get_adapter(cpu_model)
    cfg = cpu_model.config
    D, d = cfg.num_hidden_layers, cfg.hidden_size
    _, programs = _corr_batch(cfg.vocab_size, D, 4, seed=11, routable=True)
    out = [("replay", lambda: ReplayRouter(programs, D))]
    try:
        from polar import routers as R
    except Exception:
        return out

    def learned(cls, conf):
        def build():
            if hasattr(cls, "for_model"):
                return cls.for_model(adapter, conf, seed=0).eval()
            torch.manual_seed(0)
            return cls(conf).eval()
        return build

    for name, cls, conf in (
            ("drllm", getattr(R, "DrLLMRouter", None), lambda: R.DrLLMConfig(num_layers=D, hidden_size=d)),
            ("mindskip", getattr(R, "MindSkipRouter", None), lambda: R.MindSkipConfig(num_layers=D, hidden_size=d)),
            ("flexidepth", getattr(R, "FlexiDepthRouter", None),
             lambda: R.FlexiDepthConfig(num_layers=D, hidden_size=d, intermediate_size=cfg.intermediate_size))):
        if cls is None:
            continue
        try:
            out.append((name, learned(cls, conf())))
        except Exception as exc:
            out.append((name, exc))
    return out


def _check_routers(chk: Check, cpu_model, dev_model, dtype) -> dict:
    sz, dev = chk.sz, chk.device
    prompts, _ = _corr_batch(cpu_model.config.vocab_size, cpu_model.config.num_hidden_layers, sz["corr_shared"], 11)
    right, left = padded_batch(prompts, "right"), padded_batch(prompts, "left")
    out = {}
    for name, build in _router_factories(cpu_model):
        if isinstance(build, Exception):
            out[name] = {"ok": None, "msg": f"not built: {build!r}"}
            continue
        try:
            r_cpu = build()
            r_dev = copy.deepcopy(r_cpu)
            if isinstance(r_dev, torch.nn.Module):
                r_dev = r_dev.to(dev)
            ref = polar.batched_execute(cpu_model, None, right, backend="hf", router=r_cpu)
            ref_g = polar.generate(cpu_model, None, left, None, sz["corr_new"], backend="hf", router=r_cpu,
                                   eos_token_id=[])
            entry = {}
            for backend in ("hf", "fused"):
                with chk.dev():
                    e = polar.batched_execute(dev_model, None, to_device(right, dev), backend=backend, router=r_dev)
                    g = polar.generate(dev_model, None, to_device(left, dev), None, sz["corr_new"], backend=backend,
                                       router=r_dev, eos_token_id=[])
                same_programs = [list(p) for p in e.programs] == [list(p) for p in ref.programs]
                td = token_diff(g.tokens, ref_g.tokens)
                entry[backend] = {"same_programs": same_programs,
                                  "logits_rel_err": rel_err(e.logits, ref.logits) if same_programs else None,
                                  "tokens": td}
            entry["ok"] = all(v["same_programs"] and v["logits_rel_err"] <= 1e-3 and td_ok(v, dtype)
                              for v in entry.values())
            out[name] = entry
        except Exception as exc:
            out[name] = {"ok": False, "msg": f"{exc!r}"[:600]}
    return out


def td_ok(v: dict, dtype) -> bool:
    return dtype != torch.float32 or v["tokens"]["first_divergence"] is None


def sec_correctness(chk: Check) -> dict:
    sz = chk.sz
    out = {}
    for arch in sz["archs"]:
        out[f"tiny-{arch}"] = _check_model(chk, arch, tiny_model(arch, seed=1, num_layers=sz["tiny_layers"]))
    if sz["big"] and chk.left() > 200:
        big, desc = smollm2(torch.float32)
        out["smollm2-fp32"] = _check_model(chk, "smollm2", big)
        out["smollm2-fp32"]["model"] = desc
        if chk.left() > 180:
            out["smollm2-bf16"] = _check_model(chk, "smollm2", big, dtype=torch.bfloat16)
            out["smollm2-bf16"]["model"] = desc
    ok = [p.get("ok") for m in out.values() for p in m["paths"].values()]
    ok += [r.get("ok") for m in out.values() if isinstance(m.get("routers"), dict) for r in m["routers"].values()]
    return {"models": out, "checks_ok": sum(1 for x in ok if x), "checks": len(ok)}


def _layer_flops(cfg, T: int) -> float:
    """FLOPs of one decoder layer on one token of a T-token causal prompt: 2 x layer weights
    (attention projections + MLP) + scores and weighted sum over (T + 1) / 2 keys on average."""
    d, inter = cfg.hidden_size, cfg.intermediate_size
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or d // hq
    weights = d * hq * hd * 2 + d * hkv * hd * 2 + 3 * d * inter
    return 2.0 * weights + 4.0 * hq * hd * (T + 1) / 2


def _layer_weight_bytes(cfg, es: int) -> int:
    d, inter = cfg.hidden_size, cfg.intermediate_size
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or d // hq
    return es * (d * hq * hd * 2 + d * hkv * hd * 2 + 3 * d * inter + 2 * d)


def _same_shape_mm(chk: Check, cfg, M: int, dtype) -> float:
    """FLOP/s of the layer's matrix products alone at M rows (torch.mm, same run)."""
    d, inter = cfg.hidden_size, cfg.intermediate_size
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or d // hq
    shapes = [(d, hq * hd), (d, hkv * hd), (d, hkv * hd), (hq * hd, d), (d, inter), (d, inter), (inter, d)]
    xs = {k: torch.randn(M, k, device=chk.device, dtype=dtype) for k in {s[0] for s in shapes}}
    ws = [torch.randn(k, n, device=chk.device, dtype=dtype) for k, n in shapes]

    def run():
        for (k, _), w in zip(shapes, ws):
            torch.mm(xs[k], w)

    t = kernel_time(chk, run)
    return sum(2.0 * M * k * n for k, n in shapes) / t


def sec_throughput(chk: Check) -> dict:
    from variants import fixed_forward, fixed_generate

    sz, dev = chk.sz, chk.device
    if chk.smoke:
        model, desc = tiny_model("llama", seed=0, num_layers=2), "tiny Llama, 2 layers (smoke)"
        dtype = torch.float32
    else:
        model, desc = smollm2(torch.bfloat16)
        dtype = torch.bfloat16
    model = model.to(dev)
    cfg = model.config
    D, T, new = cfg.num_hidden_layers, sz["thr_T"], sz["thr_new"]
    es = torch.finfo(dtype).bits // 8
    peak = chk.report["sections"].get("ceilings", {})
    out: dict = {"model": desc, "dtype": str(dtype).replace("torch.", ""), "T": T, "new_tokens": new,
                 "prefill": [], "decode": [], "flops_per_token_layer": _layer_flops(cfg, T),
                 "layer_weight_bytes": _layer_weight_bytes(cfg, es)}
    for B in sz["thr_B"]:
        if chk.left() < 90:
            out.setdefault("skipped", []).append(f"B={B} (time budget)")
            continue
        progs = sample_programs(D, B, seed=1000 + B)
        inputs = to_device(bench_prompts(B, T, cfg.vocab_size, seed=1001 + B), dev)
        steps = sum(len(p) for p in progs)
        mm_same = _same_shape_mm(chk, cfg, B * T, dtype)
        t_fixed = timed(chk, lambda: fixed_forward(model, inputs))
        rows = [dict(B=B, variant="fixed_hf", time_s=t_fixed, row_layers=B * D, ratio=1.0)]
        variants = [("fixed_polar", "fused", False, [list(range(D))] * B)]
        variants += [(f"polar_{b}_{'shared' if s else 'unshared'}", b, s, progs)
                     for b in ("hf", "fused") for s in (False, True)]
        for name, backend, share, pr in variants:
            with chk.dev():
                t = timed(chk, lambda: polar.batched_execute(model, pr, inputs, backend=backend, share_prefix=share))
                r = polar.batched_execute(model, pr, inputs, backend=backend, share_prefix=share)
            rl = sum(len(p) for p in pr)
            rows.append(dict(B=B, variant=name, time_s=t, row_layers=rl, waves=r.num_waves, work=r.work,
                             ratio=(rl * T / t) / (B * D * T / t_fixed)))
        for row in rows:
            f = row["row_layers"] * T * out["flops_per_token_layer"] / row["time_s"]
            row["TFLOPs"] = f / 1e12
            row["vs_mm_same_shape"] = f / mm_same
            if peak.get("mm_bf16_TFLOPs") and dtype == torch.bfloat16:
                row["vs_mm_peak"] = f / 1e12 / peak["mm_bf16_TFLOPs"]
        out["prefill"] += rows
        out.setdefault("mm_same_shape_TFLOPs", {})[B] = mm_same / 1e12
        # decode: the same call with `new` and with 1 new token isolates the decode passes
        if chk.left() < 60:
            out.setdefault("skipped", []).append(f"decode B={B} (time budget)")
            continue
        reps = max(1, sz["reps"] - 1)
        th = {n: timed(chk, lambda n=n: fixed_generate(model, inputs, n), reps=reps) for n in (new, 1)}
        base_dec = B * D * (new - 1) / max(th[new] - th[1], 1e-9)
        base_all = B * D * (T + new - 1) / th[new]
        drows = [dict(B=B, variant="hf_generate", time_s=th[new], decode_s=th[new] - th[1], ratio_decode=1.0,
                      ratio_whole=1.0, decode_waves=(new - 1) * D)]
        for b in ("hf", "fused"):
            for s in (False, True):
                with chk.dev():
                    call = lambda n, b=b, s=s: polar.generate(model, None, inputs, progs, n, eos_token_id=[],  # noqa: E731
                                                              backend=b, share_prefix=s)
                    tp = {n: timed(chk, lambda n=n: call(n), reps=reps) for n in (new, 1)}
                    g = call(new)
                dec = max(tp[new] - tp[1], 1e-9)
                drows.append(dict(B=B, variant=f"polar_{b}_{'shared' if s else 'unshared'}", time_s=tp[new],
                                  decode_s=dec, decode_work=g.decode_work, decode_waves=g.decode_waves,
                                  ratio_decode=(g.decode_work / dec) / base_dec,
                                  ratio_whole=((steps * T + g.decode_work) / tp[new]) / base_all))
        copy_bw = peak.get("copy_GBps")
        for row in drows:
            row["tokens_per_s"] = B * (new - 1) / row["decode_s"]
            wbytes = row["decode_waves"] * out["layer_weight_bytes"]
            row["weight_GBps"] = wbytes / row["decode_s"] / 1e9
            if copy_bw:
                row["weight_vs_copy"] = row["weight_GBps"] / copy_bw
        out["decode"] += drows
    if chk.left() > 60:
        out["shared_prefix"] = _shared_workload(chk, model)
    if has_routing() and chk.left() > 30:
        out["routed"] = _routed_prefill(chk, model)
    return out


def _shared_workload(chk: Check, model) -> dict:
    """Rows over one long common prompt prefix (few-shot), 4 programs: shared vs unshared, and the
    prefix cache on a second batch with the same prefix."""
    sz, dev = chk.sz, chk.device
    cfg = model.config
    D, B, new = cfg.num_hidden_layers, sz["share_B"], sz["share_new"]
    g = torch.Generator().manual_seed(3)
    shared = torch.randint(3, cfg.vocab_size, (sz["share_prefix"],), generator=g)

    def batch():
        ids = torch.cat([shared.expand(B, -1), torch.randint(3, cfg.vocab_size, (B, sz["share_tail"]), generator=g)], 1)
        return {"input_ids": ids.to(dev), "attention_mask": torch.ones_like(ids).to(dev)}

    first, second = batch(), batch()
    base = sample_programs(D, 4, seed=77)
    progs = [base[r % 4] for r in range(B)]
    out = {"B": B, "prefix_tokens": sz["share_prefix"], "tail_tokens": sz["share_tail"], "new_tokens": new, "rows": []}
    for b in ("hf", "fused"):
        for s in (False, True):
            with chk.dev():
                tp = timed(chk, lambda: polar.batched_execute(model, progs, first, backend=b, share_prefix=s))
                tg = timed(chk, lambda: polar.generate(model, None, first, progs, new, eos_token_id=[], backend=b,
                                                       share_prefix=s))
                res = polar.generate(model, None, first, progs, new, eos_token_id=[], backend=b, share_prefix=s)
            out["rows"].append(dict(variant=f"{b}_{'shared' if s else 'unshared'}", prefill_s=tp, generate_s=tg,
                                    prefill_work=res.prefill_work, prefill_work_unshared=res.prefill_work_unshared,
                                    decode_work=res.decode_work, decode_waves=res.decode_waves))
    with chk.dev():
        cache = PrefixCache(1024 * 2 ** 20)
        polar.generate(model, None, first, progs, new, eos_token_id=[], backend="fused", prefix_cache=cache)
        cold = timed(chk, lambda: polar.generate(model, None, second, progs, new, eos_token_id=[], backend="fused"))
        warm = timed(chk, lambda: polar.generate(model, None, second, progs, new, eos_token_id=[], backend="fused",
                                                 prefix_cache=cache))
        r = polar.generate(model, None, second, progs, new, eos_token_id=[], backend="fused", prefix_cache=cache)
    out["prefix_cache"] = dict(generate_s_without=cold, generate_s_with=warm, speedup=cold / warm,
                               prefill_work_cached=r.prefill_work_cached, prefill_work=r.prefill_work, hits=cache.hits)
    return out


def _routed_prefill(chk: Check, model) -> dict:
    from polar.runtime.routing import ReplayRouter
    from polar.testing import routable_programs

    sz, dev = chk.sz, chk.device
    cfg = model.config
    B, T = sz["thr_B"][0], sz["thr_T"]
    progs = routable_programs(cfg.num_hidden_layers, B, seed=5)
    inputs = to_device(bench_prompts(B, T, cfg.vocab_size, seed=9), dev)
    router = ReplayRouter(progs, cfg.num_hidden_layers)
    out = {"B": B, "T": T}
    for b in ("hf", "fused"):
        with chk.dev():
            out[f"{b}_router_s"] = timed(chk, lambda: polar.batched_execute(model, None, inputs, backend=b, router=router))
            out[f"{b}_programs_s"] = timed(chk, lambda: polar.batched_execute(model, progs, inputs, backend=b,
                                                                              share_prefix=False))
    return out


def _pool_case(dev, dtype, n, Hq, Hkv, hd, K, shared, seed=0):
    g = torch.Generator().manual_seed(seed)
    P = 1 + shared + n * (K - shared)
    q = torch.randn(n, Hq, hd, generator=g).to(device=dev, dtype=dtype)
    pool_k = torch.randn(P, Hkv, hd, generator=g).to(device=dev, dtype=dtype)
    pool_v = torch.randn(P, Hkv, hd, generator=g).to(device=dev, dtype=dtype)
    idx = torch.empty(n, K, dtype=torch.long)
    idx[:, :shared] = 1 + torch.arange(shared)
    idx[:, shared:] = 1 + shared + torch.arange(n * (K - shared)).view(n, K - shared)
    mask = torch.ones(n, K, dtype=torch.bool)
    return q, pool_k, pool_v, idx.to(dev), mask.to(dev)


def sec_kernel_bench(chk: Check) -> dict:
    dev = chk.device
    dtype = torch.float32 if chk.smoke else torch.bfloat16
    es = torch.finfo(dtype).bits // 8
    big = chk.sz["kernel_scale"]
    pool_cases = ([("smollm2 n64 K1024", 64, 9, 3, 64, 1024), ("llama8b n32 K2048", 32, 32, 8, 128, 2048),
                   ("smollm2 n256 K512", 256, 9, 3, 64, 512)] if big else [("tiny n4 K32", 4, 4, 2, 16, 32)])

    def copy_time(nbytes):
        half = max(1, int(nbytes) // 2)
        src = torch.empty(half, dtype=torch.uint8, device=dev)
        dst = torch.empty_like(src)
        return kernel_time(chk, lambda: dst.copy_(src))

    rows = []
    for name, n, Hq, Hkv, hd, K in pool_cases:
        for frac in (0.875, 0.0):
            shared = int(K * frac)
            q, pool_k, pool_v, idx, mask = _pool_case(dev, dtype, n, Hq, Hkv, hd, K, shared)
            scale = 1.0 / math.sqrt(hd)
            kv_row = 2 * Hkv * hd * es
            unique = (shared + n * (K - shared)) * kv_row + 2 * q.numel() * es + idx.numel() * 8 + mask.numel()
            unshared_bytes = n * K * kv_row + 2 * q.numel() * es + idx.numel() * 8 + mask.numel()
            kc = pool_k[idx].transpose(1, 2).contiguous()
            vc = pool_v[idx].transpose(1, 2).contiguous()
            slots = torch.arange(n, device=dev)
            ref = pk.pool_decode_attention_reference(q, pool_k, pool_v, idx, mask, scale)
            impls = {
                "pool_triton_cascade": lambda: pk.pool_decode_attention_triton(q, pool_k, pool_v, idx, mask, scale),
                "pool_triton_no_cascade": lambda: pk.pool_decode_attention_triton(q, pool_k, pool_v, idx, mask, scale,
                                                                                  cascade=False),
                "pool_reference": lambda: pk.pool_decode_attention_reference(q, pool_k, pool_v, idx, mask, scale),
                "slot_triton (unshared copy)": lambda: pk.slot_decode_attention_triton(q, kc, vc, slots, mask, scale),
            }
            t_copy = copy_time(unique)
            t_copy_unshared = copy_time(unshared_bytes)
            for impl, fn in impls.items():
                err = rel_err(fn(), ref)
                t = kernel_time(chk, fn)
                rows.append(dict(kernel="attention", case=f"{name} shared={shared}", impl=impl, us=t * 1e6,
                                 bytes=unique, GBps=unique / t / 1e9, vs_copy=t_copy / t,
                                 vs_copy_unshared_bytes=t_copy_unshared / t, rel_err=err))
    # rmsnorm and scatter on decode / prefill shapes
    for name, B, T, d, n in (([("decode B128 n128 d576", 128, 1, 576, 128), ("prefill B16 T512 n8 d4096", 16, 512, 4096, 8)])
                             if big else [("tiny B4 T2 n3 d64", 4, 2, 64, 3)]):
        hidden = torch.randn(B, T, d, device=dev, dtype=dtype)
        rows_idx = torch.randperm(B, device=dev)[:n]
        w = torch.randn(d, device=dev, dtype=dtype)
        delta = torch.randn(n, T, d, device=dev, dtype=dtype) * 1e-3
        nb_norm = 2 * n * T * d * es + d * es
        nb_scatter = 3 * n * T * d * es
        for kname, nbytes, impls in (
                ("rmsnorm", nb_norm, {"triton": lambda: pk.gathered_rmsnorm_triton(hidden, rows_idx, w, 1e-6),
                                      "reference": lambda: pk.gathered_rmsnorm_reference(hidden, rows_idx, w, 1e-6)}),
                ("scatter", nb_scatter, {"triton": lambda: pk.residual_scatter_add_triton(hidden, rows_idx, delta),
                                         "reference": lambda: pk.residual_scatter_add_reference(hidden, rows_idx, delta)})):
            t_copy = copy_time(nbytes)
            for impl, fn in impls.items():
                t = kernel_time(chk, fn)
                rows.append(dict(kernel=kname, case=name, impl=impl, us=t * 1e6, bytes=nbytes, GBps=nbytes / t / 1e9,
                                 vs_copy=t_copy / t))
    return {"dtype": str(dtype).replace("torch.", ""), "rows": rows}


# ----------------------------------------------------------------------------------- report

def _fmt(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{nd}f}"
    return str(x)


def render_markdown(rep: dict) -> str:
    s = rep["sections"]
    env = s.get("env", {})
    L = [f"# GPU check: {env.get('device', '?')}", ""]
    L.append(f"`bench/gpu_check.sh` ({env.get('mode', '?')}), {env.get('date_utc', '?')}; torch {env.get('torch')}, "
             f"triton {env.get('triton')}, transformers {env.get('transformers')}, python {env.get('python')}; "
             f"total {rep.get('total_seconds')} s. Sections and seconds: {rep.get('section_seconds')}.")
    if env.get("sm_count"):
        L.append(f"Device: {env.get('sm_count')} SMs, {env.get('memory_gib')} GiB, capability {env.get('capability')}, "
                 f"CUDA {env.get('cuda')}.")
    L.append("")
    if rep.get("errors"):
        L += ["## Errors", ""] + [f"- `{k}`: {v.splitlines()[0] if v else v}" for k, v in rep["errors"].items()] + [""]
    if "ceilings" in s:
        c = s["ceilings"]
        L += ["## Ceilings (measured in this run)", "",
              f"- copy: {_fmt(c['copy_GBps'])} GB/s (bytes read + written, {c['copy_bytes'] / 2 ** 30:.2f} GiB)",
              f"- torch.mm bf16 {c['mm_bf16_n']}^3: {_fmt(c['mm_bf16_TFLOPs'])} TFLOP/s; fp32 (no TF32) "
              f"{c['mm_fp32_n']}^3: {_fmt(c['mm_fp32_TFLOPs'])} TFLOP/s", ""]
    if "kernels_vs_reference" in s:
        k = s["kernels_vs_reference"]
        bad = [cid for cid, v in k["cases"].items() if not v["ok"]]
        L += ["## Kernels against their torch references (tests/runtime/test_kernels.py cases)", "",
              f"{k['passed']}/{k['total']} passed" + (f"; not passed: {', '.join(bad)}" if bad else "") + ".", ""]
    if "correctness" in s:
        c = s["correctness"]
        L += ["## Correctness: device against CPU (reference: CPU, hf runner, unshared)", "",
              f"{c['checks_ok']}/{c['checks']} checks ok (fp32: logits within 1e-3 relative and identical tokens; "
              "bf16: logits within 5e-2, tokens reported).", "",
              "| model | path | logits rel err | rows with equal tokens | first divergence | ok |", "|---|---|---|---|---|---|"]
        for m, mv in c["models"].items():
            for p, pv in mv["paths"].items():
                td = pv["tokens"]
                L.append(f"| {m} ({mv['dtype']}) | {p} | {_fmt(pv.get('logits_rel_err'))} | {td['rows_equal']}/{td['rows']} | "
                         f"{td['first_divergence'] or '-'} | {pv['ok']} |")
            if isinstance(mv.get("routers"), dict):
                for rn, rv in mv["routers"].items():
                    if "msg" in rv:
                        L.append(f"| {m} | router {rn} | - | - | {rv['msg'][:80]} | {rv['ok']} |")
                        continue
                    for b in ("hf", "fused"):
                        v = rv[b]
                        td = v["tokens"]
                        L.append(f"| {m} | router {rn} / {b} (same programs: {v['same_programs']}) | "
                                 f"{_fmt(v['logits_rel_err'])} | {td['rows_equal']}/{td['rows']} | "
                                 f"{td['first_divergence'] or '-'} | {rv['ok']} |")
            elif mv.get("routers"):
                L.append(f"| {m} | routers | - | - | {mv['routers']} | - |")
        L.append("")
    if "throughput" in s:
        t = s["throughput"]
        L += [f"## Throughput ({t['model']}, {t['dtype']}, T = {t['T']} prompt tokens)", "",
              "Prefill: row-layer throughput = sum(len(program)) x T / s relative to the fixed-depth HF forward; "
              "FLOP/s = row-layers x T x FLOPs per token-layer "
              f"({_fmt(t['flops_per_token_layer'] / 1e6)} M) / s, against torch.mm at the layer's shapes "
              "(same run: " + ", ".join(f"B={b}: {_fmt(v)}" for b, v in t.get("mm_same_shape_TFLOPs", {}).items())
              + " TFLOP/s) and the large-mm peak.", "",
              "| B | variant | waves | row-layers | time ms | row-layer throughput vs fixed | TFLOP/s | vs same-shape mm | vs mm peak |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in t["prefill"]:
            L.append(f"| {r['B']} | {r['variant']} | {r.get('waves', '-')} | {r['row_layers']} | {r['time_s'] * 1e3:.2f} | "
                     f"**{r['ratio']:.2f}** | {_fmt(r['TFLOPs'])} | {_fmt(r['vs_mm_same_shape'])} | {_fmt(r.get('vs_mm_peak'))} |")
        L += ["", f"Decode ({t['new_tokens']} new tokens; decode = call with {t['new_tokens']} minus call with 1): "
              "row-layer throughput vs HF `generate` (decode passes alone / whole call); weight traffic = decode "
              "waves x one layer's weight bytes / decode time, against copy bandwidth.", "",
              "| B | variant | decode waves | time s | decode s | decode vs HF | whole call vs HF | tokens/s | weight GB/s | vs copy |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in t["decode"]:
            L.append(f"| {r['B']} | {r['variant']} | {r['decode_waves']} | {r['time_s']:.3f} | {r['decode_s']:.3f} | "
                     f"**{r['ratio_decode']:.2f}** | {r['ratio_whole']:.2f} | {_fmt(r['tokens_per_s'])} | "
                     f"{_fmt(r['weight_GBps'])} | {_fmt(r.get('weight_vs_copy'))} |")
        if t.get("shared_prefix"):
            sp = t["shared_prefix"]
            L += ["", f"Shared-prefix workload: B = {sp['B']} rows, {sp['prefix_tokens']} common prompt tokens + "
                  f"{sp['tail_tokens']} own, 4 programs, {sp['new_tokens']} new tokens.", "",
                  "| variant | prefill s | generate s | prefill work | unshared work | decode waves |", "|---|---|---|---|---|---|"]
            for r in sp["rows"]:
                L.append(f"| {r['variant']} | {r['prefill_s']:.4f} | {r['generate_s']:.4f} | {r['prefill_work']} | "
                         f"{r['prefill_work_unshared']} | {r['decode_waves']} |")
            pc = sp["prefix_cache"]
            L += ["", f"Prefix cache (second batch, same prefix, fused): {pc['generate_s_without']:.4f} s without, "
                  f"{pc['generate_s_with']:.4f} s with ({pc['speedup']:.2f}x; work from the cache "
                  f"{pc['prefill_work_cached']}, computed {pc['prefill_work']})."]
        if t.get("routed"):
            L += ["", f"Routed prefill (ReplayRouter, B = {t['routed']['B']}): " + ", ".join(
                f"{k} {v:.4f} s" for k, v in t["routed"].items() if k.endswith("_s"))]
        if t.get("skipped"):
            L += ["", f"Skipped for time: {t['skipped']}"]
        L.append("")
    if "kernel_bench" in s:
        kb = s["kernel_bench"]
        L += [f"## Kernels against the copy-bandwidth bound ({kb['dtype']})", "",
              "`bytes`: the least traffic (each unique key/value column, query, output, index and mask once); "
              "`vs copy` = time of a device copy of the same bytes / kernel time (1.0 = at the bound); for attention "
              "also against the bytes of the unshared layout.", "",
              "| kernel | case | impl | us | GB/s | vs copy | vs copy (unshared bytes) | rel err |", "|---|---|---|---|---|---|---|---|"]
        for r in kb["rows"]:
            L.append(f"| {r['kernel']} | {r['case']} | {r['impl']} | {r['us']:.1f} | {_fmt(r['GBps'])} | {_fmt(r['vs_copy'])} | "
                     f"{_fmt(r.get('vs_copy_unshared_bytes'))} | {_fmt(r.get('rel_err'))} |")
        L.append("")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="CPU, tiny sizes, Triton interpreter (no GPU needed)")
    ap.add_argument("--out", default=str(HERE / "gpu_results"), help="folder for <device>.json / <device>.md")
    ap.add_argument("--budget-s", type=float, default=400.0, help="stop starting sections after this many seconds")
    ap.add_argument("--sections", default="env,ceilings,kernels_vs_reference,correctness,throughput,kernel_bench")
    args = ap.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available (torch.cuda.is_available() is False); this check needs a GPU. "
              "Use --cpu-smoke for a dry run on CPU.", file=sys.stderr)
        return 2
    if not pk.HAS_TRITON:
        print("gpu_check: triton is not importable; the fused runner's kernels need it.", file=sys.stderr)
        return 2
    if args.cpu_smoke and not pk._dispatch.triton_imported_in_interpret_mode():
        print("gpu_check --cpu-smoke: set TRITON_INTERPRET=1 before starting python (bench/gpu_check.sh does).",
              file=sys.stderr)
        return 2
    torch.manual_seed(0)
    chk = Check(args)
    funcs = {"env": sec_env, "ceilings": sec_ceilings, "kernels_vs_reference": sec_kernels_vs_reference,
             "correctness": sec_correctness, "throughput": sec_throughput, "kernel_bench": sec_kernel_bench}
    mins = {"throughput": 90, "kernel_bench": 20}
    for name in args.sections.split(","):
        chk.section(name, funcs[name], mins.get(name, 0))
    chk.write()
    print(render_markdown(chk.report)[-6000:])
    print(f"gpu_check: wrote {chk.out_dir / (chk.slug + '.md')} and .json"
          + (f" (and a copy in $OUT={os.environ['OUT']})" if os.environ.get("OUT") else ""))
    return 1 if chk.report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
