"""polar as an lm-evaluation-harness model: ``PolarLM``, registered under the name ``polar``.

Every request runs under a program of layers: a fixed one (``program=full``, a layer list or the
compact form, :func:`polar.programs.parse_program_text`), or one per request predicted from its
question by a :class:`polar.Predictor` (``predictor=default|CKPT``, top-1). All three request
types apply it: ``loglikelihood`` and ``loglikelihood_rolling`` score through
:func:`polar.batched_execute` (``all_positions=True``), ``generate_until`` decodes through
:func:`polar.generate`. Requests are sorted longest first (as lm-eval's ``Collator`` does) and
batched whatever their programs; rows with the same program and the same input tokens (lm-eval's
one-token-continuation case: multiple choice) are computed once, and rows that share a prompt
prefix share its states inside a batch (``share_prefix``).

Needs ``pip install 'polar[lm-eval]'``; ``import polar`` does not import this module::

    import lm_eval
    from polar.evaluation.lm_eval_backend import PolarLM
    from polar.evaluation.lm_eval_tasks import task_manager
    lm = PolarLM.create_from_arg_obj({"pretrained": "default", "program": [0, 1, 1, 2, *range(3, 30)]})
    lm_eval.simple_evaluate(model=lm, tasks=["polar_level2"], task_manager=task_manager("~/.cache/polar/lm-eval"))

With ``program=full`` the numbers equal lm-eval's own ``HFLM`` on the same model (same
tokenization, truncation, ``is_greedy`` rule, stop rule and output cleaning; tested in
``tests/evaluation/test_lm_eval_backend.py``).
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text,
                                  resolve_max_length)

from ..errors import UserError
from ..models import load_model
from ..predictor import load_predictor
from ..programs import Program, parse_program_text, validate_program
from ..routers import load_router
from ..runtime import batched_execute, generate
from .methods import is_scorer
from .solve import ranked_candidates

logger = logging.getLogger(__name__)

#: Generation keyword arguments ``generate_until`` understands (after lm-eval's normalisation).
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "seed")

#: Where the predictor reads each request's question: the task document's ``question`` field
#: (what polar's predictors were trained on) or the request's whole context (any task).
PREDICTOR_INPUTS = ("question", "context")

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class ProgramStats:
    """Executed layers over the requests a :class:`PolarLM` served (one count per request)."""

    requests: int = 0
    layers: int = 0
    full: int = 0

    def add(self, program: Program, num_layers: int) -> None:
        self.requests += 1
        self.layers += len(program)
        self.full += tuple(program) == tuple(range(num_layers))

    def as_dict(self) -> dict:
        return {"requests": self.requests, "mean_layers": self.layers / self.requests if self.requests else None,
                "full_program_share": self.full / self.requests if self.requests else None}


def _dtype(dtype) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in _DTYPES:
        raise UserError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[str(dtype)]


def _program_arg(program, num_layers: int) -> Program:
    """``program`` model argument -> a validated :class:`Program` (text, a list of ints, a Program)."""
    if isinstance(program, str):
        return parse_program_text(program, num_layers)
    if isinstance(program, int):  # a one-layer program typed as "program=3" is parsed by lm-eval into an int
        return validate_program([program], num_layers)
    return validate_program(program, num_layers)


def _request_seed(seed: int, context: str, gen_kwargs: dict, occurrence: int) -> int:
    """A sampling seed per request, fixed by its content (not by the batch it lands in): repeats of
    one request (lm-eval's ``repeats``) are told apart by their occurrence number."""
    key = repr((seed, context, sorted(gen_kwargs.items(), key=lambda kv: kv[0]), occurrence)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


@register_model("polar")
class PolarLM(TemplateLM):
    """lm-eval model that runs a frozen LLM under programs of layers.

    Model arguments (``--model_args`` or :meth:`create_from_arg_obj`):

    - ``pretrained``: ``default`` (SmolLM2-135M-Instruct), a local folder / cached hub id, or a
      model object (then ``tokenizer`` is required).
    - ``program``: ``full`` (default), a layer list (``"0-5 5 6-29"``, or a Python list of ints) or
      the compact form (``"0-3:keep 4-5:skip ..."``); every request runs it.
    - ``predictor``: ``default`` (the checkpoint shipped for the default model) or a checkpoint
      folder: each request runs the top-1 program predicted from its question
      (``predictor_input``: ``question``, the task document's ``question`` field, or ``context``,
      the whole prompt). Excludes ``program``.
    - ``router``: a router checkpoint folder (``polar train-router``) or a router object
      (:class:`polar.Router`): layers run in order and the router decides per request
      (:func:`polar.batched_execute` / :func:`polar.generate` with ``router=``). For log-likelihoods
      it decides over the scored input (context + continuation, as one forward pass sees it); for
      generation over the prompt, and the decided program is kept for decoding. Excludes
      ``program`` and ``predictor``.
    - ``batch_size`` (rows per call, default 16), ``device``, ``dtype`` (float32 default),
      ``max_length`` (default from the model config), ``max_gen_toks`` (default 256), ``seed``
      (sampling; default 1234), ``policy`` / ``backend`` / ``share_prefix`` (as in
      :func:`polar.batched_execute`).
    """

    def __init__(self, pretrained="default", tokenizer=None, program=None, predictor=None, router=None,
                 predictor_input: str = "question", batch_size: int | str = 16, device: str | None = None,
                 dtype=None, max_length: int | None = None, max_gen_toks: int = 256, seed: int = 1234,
                 policy: str = "bound", backend: str = "auto", share_prefix: bool = True,
                 add_bos_token: bool | None = None, **unknown):
        super().__init__()
        if unknown:
            raise UserError(f"PolarLM: unknown model argument(s) {sorted(unknown)}")
        if sum(x is not None for x in (program, predictor, router)) > 1:
            raise UserError("PolarLM: give one of program=, predictor= or router=")
        if predictor_input not in PREDICTOR_INPUTS:
            raise UserError(f"PolarLM: predictor_input must be one of {PREDICTOR_INPUTS}, got {predictor_input!r}")
        if str(batch_size).startswith("auto"):
            raise UserError("PolarLM: batch_size=auto is not supported; give an int")
        self.batch_size_per_call = int(batch_size)
        if self.batch_size_per_call < 1:
            raise UserError(f"PolarLM: batch_size must be >= 1, got {batch_size}")
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line always passes a device (default cuda:0); like its HFLM, run on the CPU
            logger.warning("PolarLM: device %s asked for but no CUDA GPU here; using the CPU", device)
            device = None
        if isinstance(pretrained, str):
            self.model, self.tokenizer = load_model(pretrained, dtype=_dtype(dtype), device=device)
            self.model_name = pretrained
        else:
            if tokenizer is None:
                raise UserError("PolarLM: a model object as pretrained= needs tokenizer=")
            self.model, self.tokenizer = pretrained, tokenizer
            self.model_name = getattr(pretrained.config, "_name_or_path", type(pretrained).__name__)
        self.model.eval()
        self._device = self.model.device
        self.num_layers = int(self.model.config.num_hidden_layers)
        self.router = None if router is None else (load_router(router, self.model) if isinstance(router, (str, os.PathLike))
                                                   else router)
        self.program = None if (predictor is not None or router is not None) else _program_arg(
            "full" if program is None else program, self.num_layers)
        self.predictor = None if predictor is None else self._load_predictor(predictor)
        self.predictor_name, self.predictor_input = predictor, predictor_input
        self._max_length, self._max_gen_toks = max_length, int(max_gen_toks)
        self.seed, self.policy, self.backend_name, self.share_prefix = int(seed), policy, backend, bool(share_prefix)
        self.add_bos_token = add_bos_token
        self.stats = ProgramStats()
        self._predicted: dict[str, Program] = {}

    # ------------------------------------------------------------------ lm-eval's model interface

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """Token standing in for an empty context: BOS, else EOS (as lm-eval's HFLM)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or resolve_max_length(self.model.config, self.tokenizer)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_call

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "tokenizer")).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and string.startswith(bos):
            special = {"add_special_tokens": False}  # the text already starts with BOS
        return self.tokenizer.encode(string, **special)

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def get_model_info(self) -> dict:
        info = {"model": self.model_name, "num_layers": self.num_layers}
        if self.program is not None:
            info["program"] = list(self.program)
        elif self.router is not None:
            info["router"] = type(self.router).__name__
        else:
            info["predictor"] = str(self.predictor_name)
            info["predictor_input"] = self.predictor_input
        return info

    # ------------------------------------------------------------------ programs per request

    def _load_predictor(self, name):
        if not isinstance(name, str):
            return name  # a Predictor object (Python use)
        emb, tok = self.model.get_input_embeddings(), self.tokenizer
        predictor = load_predictor(name, embedding=emb, tokenizer=tok)
        depth = predictor.config.num_layers if is_scorer(predictor) else predictor.num_layers
        if depth != self.num_layers:
            raise UserError(f"PolarLM: predictor {name} is for {depth}-layer models, the model has {self.num_layers}")
        if is_scorer(predictor) and predictor.config.uses_llm:
            raise UserError(f"PolarLM: predictor {name} is a scorer with LLM features; use a text-feature scorer "
                            "or a segment predictor here")
        return predictor

    def _question(self, request) -> str:
        if self.predictor_input == "context":
            return request.args[0]
        doc = request.doc if isinstance(request.doc, dict) else {}
        question = doc.get("question")
        if not isinstance(question, str):
            raise UserError(f"PolarLM: task {request.task_name!r} has no 'question' field in its documents for "
                            "the predictor; pass predictor_input=context to predict from the whole prompt")
        return question

    def programs_for(self, requests) -> list[Program | None]:
        """The program of each request (the fixed one, or the predictor's top-1 for its question);
        ``None`` for each with a router (it decides while the request runs)."""
        if self.router is not None:
            return [None] * len(requests)
        if self.predictor is None:
            programs = [self.program] * len(requests)
        else:
            questions = [self._question(r) for r in requests]
            new = sorted({q for q in questions if q not in self._predicted})
            for s in range(0, len(new), 64):
                chunk = new[s:s + 64]
                for q, cands in zip(chunk, ranked_candidates(self.predictor, chunk, 1, self.num_layers)):
                    self._predicted[q] = validate_program(cands[0][0], self.num_layers)
            programs = [self._predicted[q] for q in questions]
        for p in programs:
            self.stats.add(p, self.num_layers)
        return programs

    # ------------------------------------------------------------------ log-likelihoods

    def _encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation tokens, by lm-eval's rule (an empty context becomes the prefix token)."""
        if context:
            return self._encode_pair(context, continuation)
        cont = self.tok_encode(continuation, add_special_tokens=False)
        if cont and cont[0] == self.prefix_token_id:
            return cont[:1], cont[1:]
        return [self.prefix_token_id], cont

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        programs = self.programs_for(requests)
        pairs = [self._encode(*r.args) for r in requests]
        results = self._score(pairs, programs, disable_tqdm)
        for r, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", r.args, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        programs = self.programs_for(requests)
        pairs, owner, owner_programs = [], [], []
        for i, (r, prog) in enumerate(zip(requests, programs)):
            windows = lm_utils.get_rolling_token_windows(token_list=self.tok_encode(r.args[0]),
                                                         prefix_token=self.prefix_token_id,
                                                         max_seq_len=self.max_length, context_len=1)
            for w in map(lm_utils.make_disjoint_window, windows):
                pairs.append(w)
                owner.append(i)
                owner_programs.append(prog)
        totals = [0.0] * len(requests)
        for i, (lp, _) in zip(owner, self._score(pairs, owner_programs, disable_tqdm)):
            totals[i] += lp
        for r, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, total)
        return totals

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """lm-eval's token-level entry point (``(strings, context_ids, continuation_ids)`` triples),
        run under the fixed program; with a predictor, call :meth:`loglikelihood` instead."""
        if self.program is None and self.router is None:
            raise UserError("PolarLM: token-level requests carry no question for the predictor")
        return self._score([(c, x) for _, c, x in requests], [self.program] * len(requests), disable_tqdm)

    def _score(self, pairs: Sequence[tuple[list[int], list[int]]], programs: Sequence[Program],
               disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), continuation is the greedy one)`` per pair, under its program.

        Each pair's input is ``(context + continuation)[:-1]`` left-truncated to ``max_length``
        tokens; the continuation's log-probabilities are read at its last ``len(continuation)``
        positions. Rows with the same program and input are run once."""
        L = self.max_length
        rows: dict[tuple, int] = {}
        row_inputs: list[list[int]] = []
        row_programs: list[Program] = []
        member_row = []
        for (ctx, cont), prog in zip(pairs, programs):
            if not ctx or not cont:
                raise UserError("PolarLM: a log-likelihood request with an empty context or continuation")
            inp = (ctx + cont)[-(L + 1):][:-1]
            key = (None if prog is None else tuple(prog), tuple(inp))
            if key not in rows:
                rows[key] = len(row_inputs)
                row_inputs.append(inp)
                row_programs.append(prog)
            member_row.append(rows[key])
        members = defaultdict(list)
        for m, r in enumerate(member_row):
            members[r].append(m)
        order = sorted(range(len(row_inputs)), key=lambda r: (-len(row_inputs[r]), row_inputs[r]))
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        bar = tqdm(total=len(pairs), disable=disable_tqdm, desc="polar loglikelihood")
        for s in range(0, len(order), self.batch_size):
            batch = order[s:s + self.batch_size]
            T = max(len(row_inputs[r]) for r in batch)
            ids = torch.full((len(batch), T), int(pad), dtype=torch.long)
            mask = torch.zeros((len(batch), T), dtype=torch.long)
            for b, r in enumerate(batch):  # right padding: every row's columns start at 0
                ids[b, :len(row_inputs[r])] = torch.tensor(row_inputs[r])
                mask[b, :len(row_inputs[r])] = 1
            res = batched_execute(self.model, None if self.router is not None else [row_programs[r] for r in batch],
                                  {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)},
                                  all_positions=True, policy=self.policy, backend=self.backend_name,
                                  share_prefix=self.share_prefix, router=self.router)
            self._count_routed(res.programs, [len(members[r]) for r in batch])
            for b, r in enumerate(batch):
                n = len(row_inputs[r])
                for m in members[r]:
                    cont = pairs[m][1]
                    logits = res.logits[b, n - len(cont):n].float()                     # [C, V]
                    logp = F.log_softmax(logits, dim=-1)                                 # [C, V]
                    target = torch.tensor(cont, device=logp.device)                      # [C]
                    greedy = bool((logp.argmax(-1) == target).all())
                    out[m] = (float(logp.gather(-1, target[:, None]).sum()), greedy)
                bar.update(len(members[r]))
        bar.close()
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ generation

    def _gen_settings(self, gen_kwargs: dict) -> dict:
        if not isinstance(gen_kwargs, dict):
            raise UserError(f"PolarLM: generation kwargs must be a dict, got {type(gen_kwargs).__name__}")
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
        unknown = sorted(set(kwargs) - set(GEN_KWARGS))
        if unknown:
            raise UserError(f"PolarLM: generation kwargs {unknown} are not supported (known: {', '.join(GEN_KWARGS)})")
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        until = handle_stop_sequences(kwargs.get("until"), eos=eos)
        do_sample = bool(kwargs.get("do_sample"))
        return {"until": tuple(until), "max_gen_toks": int(kwargs["max_gen_toks"]), "do_sample": do_sample,
                "temperature": float(kwargs.get("temperature", 1.0)) if do_sample else 1.0,  # 0: polar.generate refuses
                "top_p": float(kwargs.get("top_p") or 1.0) if do_sample else 1.0,
                "top_k": int(kwargs.get("top_k") or 0) if do_sample else 0,
                "seed": int(kwargs["seed"]) if kwargs.get("seed") is not None else self.seed}

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        programs = self.programs_for(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        settings = []
        for i, r in enumerate(requests):
            st = self._gen_settings(r.args[1])
            settings.append(st)
            groups[tuple(sorted(st.items()))].append(i)
        seen: Counter = Counter()
        seeds = []
        for r, st in zip(requests, settings):  # occurrence numbers in request order: repeats differ
            key = (r.args[0], tuple(sorted(st.items())))
            seeds.append(_request_seed(st["seed"], r.args[0], {k: v for k, v in st.items() if k != "seed"},
                                       seen[key]))
            seen[key] += 1
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="polar generate_until")
        for members in groups.values():
            st = settings[members[0]]
            max_ctx = self.max_length - st["max_gen_toks"]
            if max_ctx <= 0:
                raise UserError(f"PolarLM: max_gen_toks {st['max_gen_toks']} leaves no room in max_length "
                                f"{self.max_length}")
            encoded = {i: self.tok_encode(requests[i].args[0])[-max_ctx:] for i in members}
            members = sorted(members, key=lambda i: (-len(encoded[i]), requests[i].args[0]))
            for s in range(0, len(members), self.batch_size):
                batch = members[s:s + self.batch_size]
                texts = self._generate([encoded[i] for i in batch], [programs[i] for i in batch], st,
                                       [seeds[i] for i in batch])
                for i, text in zip(batch, texts):
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(batch))
        bar.close()
        return out  # type: ignore[return-value]

    def _generate(self, prompts: list[list[int]], programs: list[Program], st: dict, seeds: list[int]) -> list[str]:
        """One :func:`polar.generate` call; a row stops once its new text contains a stop string
        (lm-eval's rule: anywhere, leading whitespace included), and its text is cut before it."""
        until = list(st["until"])
        T = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        ids = torch.full((len(prompts), T), int(pad), dtype=torch.long)
        mask = torch.zeros((len(prompts), T), dtype=torch.long)
        for b, p in enumerate(prompts):  # left padding
            ids[b, T - len(p):] = torch.tensor(p)
            mask[b, T - len(p):] = 1
        stops = [u for u in until if u]
        res = generate(self.model, self.tokenizer, {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)},
                       None if self.router is not None else programs, router=self.router, max_new_tokens=st["max_gen_toks"], do_sample=st["do_sample"],
                       temperature=st["temperature"], top_p=st["top_p"], top_k=st["top_k"],
                       stop_fn=(lambda row, text: any(u in text for u in stops)) if stops else None,
                       seed=seeds if st["do_sample"] else None, policy=self.policy, backend=self.backend_name,
                       share_prefix=self.share_prefix)
        self._count_routed(res.programs, [1] * len(prompts))
        return [postprocess_generated_text(self.tok_decode(toks), until, None) for toks in res.tokens]

    def _count_routed(self, programs: Sequence[Program], counts: Sequence[int]) -> None:
        """With a router, record the programs it decided (each for ``counts[i]`` requests)."""
        if self.router is not None:
            for prog, c in zip(programs, counts):
                for _ in range(c):
                    self.stats.add(prog, self.num_layers)
