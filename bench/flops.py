"""How close to the limit: achieved layer FLOP/s of prefill and decode on the CPU (issue 23 item 7).

    python bench/flops.py                                   # SmolLM2 (default model), B=32, 8 new tokens, 3 rounds
    python bench/flops.py --model tiny --rounds 1 --new 4   # quick check
    python bench/flops.py --out bench/flops.md --json bench/flops.json

One torch thread, pinned to one CPU (``--cpu``, default the last one this process may use); times are
the CPU time of that thread (``time.thread_time``, so waiting for a busy core is not counted; wall
times are in the JSON), median over ``--rounds`` rounds, every variant once per round.

Variants, each one ``generate`` call on the benchmark batch of ``test_decode.py`` (64-token prompts):
``hf`` = Hugging Face ``generate`` at fixed depth; ``polar`` = ``polar.generate(..., share_prefix=False)``;
``polar_shared`` = ``polar.generate`` as called by default (shared prefixes). *prefill* is the call's
first pass (HF's first forward, the engine's ``prefill()``: every layer over the prompt plus the LM
head at the last token), *decode* the other ``new - 1`` passes (one column per row each).

FLOPs counted (2 per multiply-add) for the layer applications the variant runs: per token q/k/v/o
projections ``2 d (H + 2 H_kv) hd + 2 H hd d`` and MLP ``6 d I`` (dense MLPs only), attention scores
and weighted values ``4 H hd keys`` (``keys`` = the positions the token attends to). With shared
prefixes a state computed once counts once (its work counters). ``achieved`` = layer FLOPs / the
passes' time (which also holds the LM head, embeddings, norms, gathers and Python: everything the
pass does); the LM head's FLOPs (``2 d V`` per logit row) are in the JSON only. Reference points
measured in the same run, same thread:

- ``GEMM replay``: ``torch.mm`` alone on the pass's own projection shapes, in wave order, with the
  model's own weights (what the pass would cost with no other op); ``achieved / replay`` is the
  share of the ideal left after everything that is not a projection GEMM;
- ``mm peak``: the best ``torch.mm`` rate over large shapes (``2048 x d x I``, weights hot): the
  compute limit of one core;
- ``roofline``: per wave ``max(weight bytes / read bandwidth, GEMM FLOPs / mm peak)``, the bandwidth
  measured by summing a 256 MiB tensor: no GEMM library can run the pass's projections faster.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import polar  # noqa: E402
from polar.runtime import generation as G  # noqa: E402
from polar.runtime.packing import pack  # noqa: E402
from polar.runtime.schedule import DEFAULT_POLICY, plan_waves  # noqa: E402
from common import Models, get_batch  # noqa: E402
from variants import fixed_generate  # noqa: E402

VARIANTS = ("hf", "polar", "polar_shared")


class Shapes:
    """Per-token FLOPs and per-wave GEMMs of one dense Llama-family model."""

    def __init__(self, model):
        cfg = model.config
        self.d, self.I, self.V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
        self.H, self.Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or self.d // self.H
        self.D = cfg.num_hidden_layers
        self.window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        d, I, H, Hkv, hd = self.d, self.I, self.H, self.Hkv, self.hd
        self.proj = 2 * d * (H + 2 * Hkv) * hd + 2 * H * hd * d + 6 * d * I       # per token per layer
        self.attn_per_key = 4 * H * hd
        self.lm = 2 * d * self.V
        self.layers = polar.get_adapter(model).layers

    def keys(self, pos: int) -> int:
        return pos + 1 if self.window is None else min(pos + 1, self.window)

    def weights(self, layer: int) -> list[torch.Tensor]:
        """The layer's projection weights ``[out, in]``, in the order a layer runs them."""
        a, m = self.layers[layer].self_attn, self.layers[layer].mlp
        return [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight,
                m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight]

    def layer_bytes(self, layer: int) -> int:
        return sum(w.numel() * w.element_size() for w in self.weights(layer))


def pin(cpu: int | None) -> int | None:
    torch.set_num_threads(1)
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = max(os.sched_getaffinity(0)) if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})
    return cpu


class PassTimer:
    """Thread CPU time (and wall time) of a call's first pass and of its later passes."""

    def __init__(self, model):
        self.reset()
        self._patches = []
        fwd = model.forward

        @functools.wraps(fwd)  # keeps the signature: generate still passes logits_to_keep=1
        def forward(*a, **k):
            return self._timed(fwd, *a, **k)
        self._patch(model, "forward", forward)
        for cls in (G.SharedGeneration, G._PlainGeneration):
            for name in ("prefill", "decode"):
                orig = getattr(cls, name)
                self._patch(cls, name, functools.wraps(orig)(lambda s, *a, _o=orig, **k: self._timed(_o, s, *a, **k)))

    def _patch(self, obj, name, new):
        self._patches.append((obj, name, obj.__dict__.get(name)))
        setattr(obj, name, new)

    def reset(self):
        self.passes: list[tuple[float, float]] = []

    def _timed(self, f, *a, **k):
        t0, w0 = time.thread_time(), time.perf_counter()
        out = f(*a, **k)
        self.passes.append((time.thread_time() - t0, time.perf_counter() - w0))
        return out

    def restore(self):
        for obj, name, old in reversed(self._patches):
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


def gemm_replay(shapes: Shapes, waves: list[tuple[int, int]]) -> tuple[float, int]:
    """Thread time and FLOPs of ``torch.mm`` on each wave's ``(layer, M rows)`` projections."""
    xs: dict[tuple[int, int], torch.Tensor] = {}
    flops, t = 0, 0.0
    for layer, M in waves:
        for w in shapes.weights(layer):
            x = xs.get((M, w.shape[1]))
            if x is None:
                x = xs[(M, w.shape[1])] = torch.randn(M, w.shape[1], dtype=w.dtype)
            t0 = time.thread_time()
            torch.mm(x, w.t())
            t += time.thread_time() - t0
            flops += 2 * M * w.shape[0] * w.shape[1]
    return t, flops


def mm_peak(shapes: Shapes, reps: int = 3) -> float:
    """Best FLOP/s of ``torch.mm`` on ``[2048, in] x [in, out]`` for the model's projection shapes."""
    best = 0.0
    for w in shapes.weights(0):
        x = torch.randn(2048, w.shape[1], dtype=w.dtype)
        wt = w.t().contiguous()
        torch.mm(x, wt)
        for _ in range(reps):
            t0 = time.thread_time()
            torch.mm(x, wt)
            best = max(best, 2 * 2048 * w.shape[0] * w.shape[1] / max(time.thread_time() - t0, 1e-9))
    return best


def read_bandwidth(mib: int = 256, reps: int = 3) -> float:
    """Bytes/s read by ``torch.sum`` over a ``mib`` MiB fp32 tensor (weights are read, not written)."""
    src = torch.ones(mib * 2**18)
    best = 0.0
    for _ in range(reps):
        t0 = time.thread_time()
        src.sum()
        best = max(best, src.numel() * 4 / max(time.thread_time() - t0, 1e-9))
    return best


def count_bound_waves(programs: list[list[int]], num_layers: int) -> list[tuple[int, int]]:
    """The fewest waves any schedule can run: per layer, as many waves as one row uses it at most
    (``count_lower_bound`` of the scheduler benchmarks), its row-layers spread evenly over them.
    Not a real schedule (it ignores the order of each program); a lower bound for the GEMM time of
    a pass with ``torch.mm`` (``(layer, M rows)`` per wave)."""
    out = []
    for layer in range(num_layers):
        uses = [p.count(layer) for p in programs]
        waves, total = max(uses), sum(uses)
        out += [(layer, total // waves + (i < total % waves)) for i in range(waves)] if waves else []
    return out


def roofline(shapes: Shapes, waves: list[tuple[int, int]], peak: float, bw: float) -> float:
    t = 0.0
    for layer, M in waves:
        flops = sum(2 * M * w.shape[0] * w.shape[1] for w in shapes.weights(layer))
        t += max(shapes.layer_bytes(layer) / bw, flops / peak)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", choices=["smollm2", "tiny"])
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--new", type=int, default=8, help="new tokens per call (decode passes: new - 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--policy", default=DEFAULT_POLICY)
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.new < 2 or args.rounds < 1 or args.B < 1:
        ap.error("--new must be >= 2, --rounds and --B >= 1")
    cpu = pin(args.cpu)
    model, desc = Models().get(args.model)
    batch = get_batch(args.model, model, args.B)
    shapes = Shapes(model)
    progs, inputs, B, T, D = batch.programs, batch.inputs, args.B, batch.tokens, batch.num_layers
    new = args.new
    calls = {
        "hf": lambda: fixed_generate(model, inputs, new),
        "polar": lambda: polar.generate(model, None, inputs, progs, new, eos_token_id=[], policy=args.policy,
                                        share_prefix=False),
        "polar_shared": lambda: polar.generate(model, None, inputs, progs, new, eos_token_id=[], policy=args.policy),
    }

    # work and waves of each variant (programs fixed; every row generates `new` tokens, no EOS)
    lens = [len(p) for p in progs]
    waves = plan_waves(pack(progs), args.policy, D)
    sizes = (waves.offsets[1:] - waves.offsets[:-1]).tolist()
    polar_waves = list(zip(waves.layers.tolist(), sizes))
    attn_pre = sum(shapes.attn_per_key * shapes.keys(p) for p in range(T))          # one row-layer over the prompt
    attn_dec = [shapes.attn_per_key * shapes.keys(T + t) for t in range(new - 1)]              # pass t: position T + t
    work = {
        "hf": dict(pre_rl=B * D, dec_rl=B * D, pre_waves=[(l, B * T) for l in range(D)],
                   dec_waves=[(l, B) for l in range(D)]),
        "polar": dict(pre_rl=sum(lens), dec_rl=sum(lens), pre_waves=[(l, n * T) for l, n in polar_waves],
                      dec_waves=polar_waves),
    }
    work["polar_shared"] = dict(work["polar"])

    timer = PassTimer(model)
    res = {v: {"pre": [], "dec": [], "pre_wall": [], "dec_wall": []} for v in VARIANTS}
    tokens, shared_work = {}, None
    try:
        with torch.inference_mode():
            for v in VARIANTS:  # warm-up, tokens, the shared call's work counters
                out = calls[v]()
                tokens[v] = out[:, T:].tolist() if v == "hf" else out.tokens
                if v == "polar_shared":
                    shared_work = (out.prefill_work, out.prefill_work_unshared, out.decode_work, out.decode_work_unshared)
            for _ in range(args.rounds):
                for v in VARIANTS:
                    timer.reset()
                    calls[v]()
                    (p, pw), rest = timer.passes[0], timer.passes[1:]
                    assert len(rest) == new - 1, (v, len(timer.passes))
                    res[v]["pre"].append(p), res[v]["pre_wall"].append(pw)
                    res[v]["dec"].append(sum(r[0] for r in rest)), res[v]["dec_wall"].append(sum(r[1] for r in rest))
            peak = mm_peak(shapes)
            bw = read_bandwidth()
            replay = {}
            for v in ("hf", "polar"):
                w = work[v]
                replay[(v, "pre")] = min(gemm_replay(shapes, w["pre_waves"]) for _ in range(args.rounds))
                replay[(v, "dec")] = min(gemm_replay(shapes, w["dec_waves"] * (new - 1)) for _ in range(args.rounds))
            ideal = count_bound_waves(progs, D)
            replay[("ideal", "dec")] = min(gemm_replay(shapes, ideal * (new - 1)) for _ in range(args.rounds))
    finally:
        timer.restore()
    if shared_work is not None:  # states computed once count once (no-op when nothing is shared)
        pw, pwu, dw, dwu = shared_work
        work["polar_shared"] = dict(work["polar"], scale_pre=pw / pwu, scale_dec=dw / max(dwu, 1))

    rows, record = [], dict(model=args.model, model_desc=desc, B=B, T=T, new=new, rounds=args.rounds, cpu=cpu,
                            policy=args.policy, load=os.getloadavg(), mm_peak=peak, read_bandwidth=bw,
                            tokens_identical=tokens["polar"] == tokens["polar_shared"], results={})
    for phase in ("pre", "dec"):
        base = None
        for v in VARIANTS:
            w = work[v]
            rl = w[f"{phase}_rl"]
            scale = w.get(f"scale_{phase}", 1.0)
            if phase == "pre":
                layer_flops = scale * (rl * T * shapes.proj + rl * attn_pre)
                lm_flops = B * shapes.lm
                n_waves = len(w["pre_waves"])
            else:
                layer_flops = scale * sum(rl * (shapes.proj + a) for a in attn_dec)
                lm_flops = B * shapes.lm * (new - 1)
                n_waves = len(w["dec_waves"]) * (new - 1)
            t = statistics.median(res[v][phase])
            rep_t, rep_f = replay[("hf" if v == "hf" else "polar", phase)]
            waves_list = w[f"{phase}_waves"] * (1 if phase == "pre" else new - 1)
            roof = roofline(shapes, waves_list, peak, bw) * scale
            work_units = scale * rl * (T if phase == "pre" else new - 1)
            base = base or (work_units / t)
            entry = dict(time=t, wall=statistics.median(res[v][f"{phase}_wall"]), waves=n_waves, layer_flops=layer_flops,
                         lm_flops=lm_flops, achieved=layer_flops / t, replay=rep_f / rep_t, roofline_time=roof,
                         rl_tput_vs_hf=(work_units / t) / base)
            record["results"][f"{phase}/{v}"] = entry
            rows.append(f"| {'prefill' if phase == 'pre' else 'decode'} | {v} | {n_waves} | {layer_flops / 1e9:.1f} | "
                        f"{t:.2f} | **{entry['achieved'] / 1e9:.1f}** | {entry['replay'] / 1e9:.1f} | "
                        f"{entry['achieved'] / entry['replay']:.2f} | {entry['achieved'] / peak:.2f} | "
                        f"{roof:.3f} | {t / roof:.2f} | {entry['rl_tput_vs_hf']:.2f} |")
    header = [
        f"Model `{args.model}` ({desc}); B = {B}, T = {T} prompt tokens, {new} new tokens ({new - 1} decode "
        f"passes), policy `{args.policy}`; one torch thread pinned to CPU {cpu}; thread CPU time, median of "
        f"{args.rounds} rounds; load {', '.join(f'{x:.2f}' for x in os.getloadavg())}. "
        f"mm peak (torch.mm, 2048-row projections) **{peak / 1e9:.1f} GFLOP/s**; read bandwidth "
        f"{bw / 1e9:.1f} GB/s. Tokens polar = polar_shared: {record['tokens_identical']}.",
        "",
        "| phase | variant | waves | layer GFLOP | time s | achieved GFLOP/s | GEMM replay GFLOP/s (same shapes) | "
        "achieved / replay | achieved / mm peak | roofline s | time / roofline | row-layer tput vs hf |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    # the decode ratio a schedule could reach if its passes were nothing but torch.mm on its waves
    hf_rate = B * D / replay[("hf", "dec")][0]
    gemm_only = {"policy": sum(lens) / replay[("polar", "dec")][0] / hf_rate,
                 "count_lower_bound": sum(lens) / replay[("ideal", "dec")][0] / hf_rate}
    record["decode_gemm_only_ratio_vs_hf"] = gemm_only
    record["waves_per_pass"] = {"hf": D, "policy": len(polar_waves), "count_lower_bound": len(ideal)}
    rows += ["", f"Decode passes as `torch.mm` alone on their waves' projections (no attention, norms, gathers or "
             f"Python), row-layer throughput vs HF's waves timed the same way: policy `{args.policy}` schedule "
             f"({len(polar_waves)} waves per pass) **{gemm_only['policy']:.2f}**; the wave-count lower bound "
             f"({len(ideal)} waves per pass, rows spread evenly; no schedule has fewer) "
             f"**{gemm_only['count_lower_bound']:.2f}**; HF {D} waves of {B} rows."]
    table = "\n".join(header + rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
