"""Shared-prefix greedy generation for many problems under ONE program (scratch helper).

Every few-shot prompt starts with the same four shots.  For a program, the shots' keys/values
are computed once per program step (1 row), then all problems' suffixes ("Q: ...\\nA:") run as one
batch on top of them, then greedy decode.  Semantics as polar.generate (KV cache per program step,
positions = real token positions, stop string matched after leading whitespace, EOS from the
model's generation config).  measure.py cross-checks its texts against polar.generate.
"""
from __future__ import annotations

import torch


class _StepCache:
    """past_key_values for one layer call: ignores layer_idx, uses the current program step."""

    def __init__(self):
        self.k, self.v, self.step = {}, {}, 0

    def update(self, key, value, *args, **kwargs):
        s = self.step
        if s in self.k:
            self.k[s] = torch.cat([self.k[s], key], 2)
            self.v[s] = torch.cat([self.v[s], value], 2)
        else:
            self.k[s], self.v[s] = key, value
        return self.k[s], self.v[s]

    def get_seq_length(self, *args, **kwargs):
        return 0


def _bias(allowed):  # bool [B, q, k] -> additive float [B, 1, q, k]
    return torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]


def _run(model, hidden, program, cache, pos, allowed):
    lm = model.model
    cos, sin = lm.rotary_emb(hidden, pos)
    bias = _bias(allowed)
    for step, li in enumerate(program):
        cache.step = step
        out = lm.layers[li](hidden, attention_mask=bias, position_ids=pos, past_key_values=cache,
                            use_cache=True, position_embeddings=(cos, sin))
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def stop_end(text, stop_strings):
    lead = len(text) - len(text.lstrip())
    ends = [i + len(s) for s in stop_strings if (i := text.find(s, lead)) >= 0]
    return min(ends) if ends else None


@torch.inference_mode()
def generate_shared(model, tok, prompts: list[str], program: list[int],
                    max_new_tokens=8, stop_strings=("\n",)):
    """Texts for ``prompts`` (no padding needed), all under ``program``; the longest common token
    prefix of the prompts (minus one token, so every suffix is non-empty) is computed once."""
    all_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    n = min(map(len, all_ids)) - 1
    first = all_ids[0]
    for ids in all_ids[1:]:
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    pre = first[:n]
    sufs = [ids[n:] for ids in all_ids]
    P, B = len(pre), len(sufs)
    lm = model.model
    # 1) prefix, one row
    pc = _StepCache()
    pos = torch.arange(P)[None]
    allowed = torch.ones(P, P, dtype=torch.bool).tril()[None]
    _run(model, lm.embed_tokens(torch.tensor([pre])), program, pc, pos, allowed)
    cache = _StepCache()
    cache.k = {s: k.expand(B, -1, -1, -1).contiguous() for s, k in pc.k.items()}
    cache.v = {s: v.expand(B, -1, -1, -1).contiguous() for s, v in pc.v.items()}
    # 2) suffixes, right padded
    S = max(map(len, sufs))
    lens = torch.tensor([len(s) for s in sufs])
    ids = torch.tensor([s + [0] * (S - len(s)) for s in sufs])
    sval = torch.arange(S)[None] < lens[:, None]                      # [B, S]
    key_valid = torch.cat([torch.ones(B, P, dtype=torch.bool), sval], 1)  # [B, P+S]
    causal = torch.ones(S, P + S, dtype=torch.bool).tril(P)           # query j sees keys <= P+j
    allowed = causal[None] & key_valid[:, None, :]
    pos = (P + torch.arange(S))[None].expand(B, -1)
    h = _run(model, lm.embed_tokens(ids), program, cache, pos, allowed)
    last = h[torch.arange(B), lens - 1]
    logits = model.lm_head(lm.norm(last))
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    toks = [[] for _ in range(B)]
    done = [False] * B
    next_pos = P + lens
    for t in range(max_new_tokens):
        nxt = logits.argmax(-1)
        for r, tk in enumerate(nxt.tolist()):
            if done[r]:
                continue
            toks[r].append(tk)
            if tk in eos or stop_end(tok.decode(toks[r], skip_special_tokens=True), stop_strings) is not None:
                done[r] = True
        if all(done) or t == max_new_tokens - 1:
            break
        key_valid = torch.cat([key_valid, torch.ones(B, 1, dtype=torch.bool)], 1)
        h = _run(model, lm.embed_tokens(nxt[:, None]), program, cache, next_pos[:, None], key_valid[:, None, :])
        logits = model.lm_head(lm.norm(h[:, -1]))
        next_pos = next_pos + 1
    texts = []
    for tk in toks:
        text = tok.decode(tk, skip_special_tokens=True)
        e = stop_end(text, stop_strings)
        texts.append(text if e is None else text[:e])
    return texts
