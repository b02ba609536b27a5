"""Record real outputs of the default model for the early-answer rule test (test_answer_rule.py).

Generates greedily with a fixed 50-token budget, no stop strings and no rule (EOS only), for
synthetic problems of levels 1-5 under the full program, single edits of it and random
segment-space programs (which often produce garbage), in both prompt styles. Each line of
``recorded_outputs.jsonl`` holds the problem, the style, the program, the decoded text and
``cuts``: the length of the decoded text after each generated token (where ``generate`` would
call ``stop_fn``). Rerun (minutes on one core):

    python tests/search/data/record_outputs.py
"""
import json
import random
from pathlib import Path

import torch

from polar.models import load_model
from polar.programs import random_compact
from polar.runtime import generate
from polar.tasks import build_prompt, resolve

OUT = Path(__file__).with_name("recorded_outputs.jsonl")
BUDGET = 50


def programs(rng: random.Random, D: int, n: int) -> list[list[int]]:
    out = [list(range(D))]
    while len(out) < n:
        kind = rng.random()
        p = list(range(D))
        s, k = rng.randrange(D - 4), rng.randint(1, 4)
        if kind < 0.4:
            p = p[:s] + p[s + k:]
        elif kind < 0.8:
            p = p[:s + k] + p[s:s + k] * rng.randint(1, 2) + p[s + k:]
        else:
            p = list(random_compact(D, rng).decode())
        out.append(p)
    return out


def main() -> None:
    torch.set_num_threads(1)
    model, tok = load_model("default")
    D = model.config.num_hidden_layers
    rng = random.Random(0)
    rows = []
    for style, per_level in (("fewshot", 4), ("direct", 2)):
        for level in range(1, 6):
            for problem in resolve(f"synthetic:{level}:{per_level}:test:7"):
                for program in programs(rng, D, 4 if style == "fewshot" else 3):
                    rows.append((style, problem, program))
    with open(OUT, "w", encoding="utf-8") as fh:
        for style in ("fewshot", "direct"):
            batch = [r for r in rows if r[0] == style]
            for i in range(0, len(batch), 32):
                chunk = batch[i:i + 32]
                res = generate(model, tok, [build_prompt(p, style, tok) for _, p, _ in chunk],
                               [prog for _, _, prog in chunk], BUDGET)
                for (_, problem, program), tokens in zip(chunk, res.tokens):
                    text = tok.decode(tokens, skip_special_tokens=True)
                    cuts = [len(tok.decode(tokens[:k], skip_special_tokens=True)) for k in range(1, len(tokens) + 1)]
                    fh.write(json.dumps({"style": style, "problem": problem.__dict__, "program": program,
                                         "text": text, "cuts": cuts, "eos": len(tokens) < BUDGET}) + "\n")
                print(style, i + len(chunk), "/", len(batch), flush=True)


if __name__ == "__main__":
    main()
