"""Requests per second of PolarLM vs lm-eval's HFLM on the same default-model object, one thread, one run.

    OMP_NUM_THREADS=1 python results/lm_eval/measure_throughput.py --out results/lm_eval/throughput.json

Log-likelihood: every request of ``polar_level2_choice`` (118 questions x 4 choices, each choice
a continuation of the same prompt). Generation: the first 50 ``polar_level2`` prompts (greedy,
until newline, at most 50 tokens). Both backends get the same Instances; the script also records
how far their answers are apart (max |log-likelihood difference|, is_greedy and generation
mismatches). Needs ``polar data --export-lm-eval ~/.cache/polar/lm-eval`` first.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="~/.cache/polar/lm-eval")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--gen-limit", type=int, default=50)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    import polar
    from polar.evaluation.lm_eval_backend import PolarLM

    data = Path(args.data_dir).expanduser()
    choice = [json.loads(x) for x in (data / "level2_choice.jsonl").read_text().splitlines()]
    level2 = [json.loads(x) for x in (data / "level2.jsonl").read_text().splitlines()][: args.gen_limit]
    ll = [Instance("loglikelihood", d, (d["prompt"], " " + c), i) for i, (d, c) in
          enumerate((d, c) for d in choice for c in d["choices"])]
    gen = [Instance("generate_until", d, (d["prompt"], {"until": ["\n"], "max_gen_toks": 50, "do_sample": False}), i)
           for i, d in enumerate(level2)]

    model, tok = polar.load_default()
    backends = {
        "hflm": lambda: HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size),
        "polar": lambda: PolarLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size),
        "polar_no_share": lambda: PolarLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size,
                                          share_prefix=False),
    }
    out: dict = {"batch_size": args.batch_size, "threads": 1, "loglikelihood_requests": len(ll),
                 "generate_requests": len(gen), "torch": torch.__version__}
    answers: dict = {}
    for name, make in backends.items():
        lm = make()
        t0 = time.perf_counter()
        lls = lm.loglikelihood(ll, disable_tqdm=True)
        t_ll = time.perf_counter() - t0
        t0 = time.perf_counter()
        gens = lm.generate_until(gen, disable_tqdm=True) if name != "polar_no_share" else None
        t_gen = time.perf_counter() - t0
        answers[name] = (lls, gens)
        out[name] = {"loglikelihood_s": round(t_ll, 2), "loglikelihood_req_per_s": round(len(ll) / t_ll, 2)}
        if gens is not None:
            out[name].update({"generate_s": round(t_gen, 2), "generate_req_per_s": round(len(gen) / t_gen, 2)})
        print(name, out[name], flush=True)
    ref_ll, ref_gen = answers["hflm"]
    for name in ("polar", "polar_no_share"):
        lls, gens = answers[name]
        out[name]["speedup_loglikelihood_vs_hflm"] = round(out["hflm"]["loglikelihood_s"] / out[name]["loglikelihood_s"], 2)
        out[name]["max_abs_loglikelihood_diff"] = max(abs(a - b) for (a, _), (b, _) in zip(lls, ref_ll))
        out[name]["is_greedy_mismatches"] = sum(ga != gb for (_, ga), (_, gb) in zip(lls, ref_ll))
        if gens is not None:
            out[name]["speedup_generate_vs_hflm"] = round(out["hflm"]["generate_s"] / out[name]["generate_s"], 2)
            out[name]["generation_mismatches"] = sum(a != b for a, b in zip(gens, ref_gen))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
