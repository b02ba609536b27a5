"""lm-eval tasks shipped with polar, read from local JSONL files (no hub, no network).

The YAMLs in this folder (package data) define the tasks; :func:`export_lm_eval` writes the JSONL
they read, one record per problem (``id, question, answer, source, level, prompt``; ``prompt`` is
polar's few-shot prompt, :func:`polar.build_prompt`), and copies the YAMLs beside the data with
``data_dir`` pointing there, so that the export folder is a complete lm-eval task folder
(``lm_eval --include_path DIR``). The YAMLs here read :data:`DEFAULT_DATA_DIR`.

Tasks (``polar lm-eval --tasks``):

| task | requests | data |
|---|---|---|
| ``polar_level1`` .. ``polar_level5`` | generate_until, graded by :func:`polar.is_correct` | every test-split problem of the level, in ``synthetic(level, n, "test", 0)`` order |
| ``polar_words`` | generate_until | the first :data:`WORDS_N` test word problems (``word_problems(n, "test", 0)``) |
| ``polar_gsm8k``, ``polar_mawps``, ``polar_asdiv`` | generate_until | the benchmark files given to the export |
| ``polar_level2_choice`` | multiple_choice (log-likelihood of 4 sums) | level 2 |
| ``polar_words_ppl`` | loglikelihood_rolling (perplexity of the question text) | the word problems |

Tags: ``polar_levels`` (the five levels), ``polar_benchmarks``. The first ``N`` records of a file
are the problems of ``--data synthetic:L:N`` / ``words:N``, so ``--limit N`` matches ``polar eval``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ...errors import UserError
from ...tasks import Problem, build_prompt, load, synthetic, word_problems
from ...tasks.levels import level_problems, split_of

#: This folder: the task YAMLs, their shared template and ``utils.py``.
TASKS_DIR = Path(__file__).resolve().parent

#: Where the YAMLs of this folder read their JSONL (``polar data --export-lm-eval`` to it, or
#: export anywhere and use the YAMLs written there).
DEFAULT_DATA_DIR = "~/.cache/polar/lm-eval"

#: Word problems exported (their test templates give many more; the first 100 are ``polar eval``'s).
WORDS_N = 200

#: The benchmark tasks and the polar file format of their source.
BENCHMARKS = {"gsm8k": "gsm8k", "mawps": "mawps", "asdiv": "asdiv"}

#: The prompt style of every task (the fewshot prompt needs no tokenizer).
PROMPT_STYLE = "fewshot"

_TASK_FILES = ("_polar_generate_template", "utils.py")


def task_names() -> list[str]:
    """Every task this folder defines."""
    return sorted(p.stem for p in TASKS_DIR.glob("polar_*.yaml"))


def _record(problem: Problem) -> dict:
    return {"id": problem.id, "question": problem.question, "answer": problem.answer, "source": problem.source,
            "level": problem.level, "prompt": build_prompt(problem, PROMPT_STYLE)}


def _choices(answer: str) -> tuple[list[str], int]:
    """Four sums for a multiple-choice question: the gold one and three near misses, ascending."""
    g = int(answer)
    options = sorted({g, g + 1, g + 10, g - 1 if g >= 1 else g + 2})
    return [str(x) for x in options], options.index(g)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def level_test_problems(level: int) -> list[Problem]:
    """Every distinct test-split problem of ``level`` in ``synthetic(level, n, "test", 0)`` order."""
    n = sum(split_of(e) == "test" for e, _ in level_problems(level))
    return synthetic(level, n, "test", 0)


def export_lm_eval(out_dir: str | os.PathLike, benchmarks: dict[str, str] | None = None,
                   words: int = WORDS_N) -> dict[str, int]:
    """Write the JSONL of polar's lm-eval tasks and the task YAMLs (reading them) into ``out_dir``.

    ``benchmarks``: ``{"gsm8k" | "mawps" | "asdiv": path}``, each loaded with its polar format
    (:func:`polar.load_problems`). Returns ``{file name: records}``. :class:`polar.UserError` for
    an unknown benchmark name or a file that is not of its format."""
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    benchmarks = dict(benchmarks or {})
    unknown = sorted(set(benchmarks) - set(BENCHMARKS))
    if unknown:
        raise UserError(f"unknown benchmark(s) {unknown}; expected some of {sorted(BENCHMARKS)}")
    written: dict[str, int] = {}

    def put(name: str, records: list[dict]) -> None:
        _write_jsonl(out / name, records)
        written[name] = len(records)

    for level in range(1, 6):
        put(f"level{level}.jsonl", [_record(p) for p in level_test_problems(level)])
    choice = []
    for p in level_test_problems(2):
        options, gold = _choices(p.answer)
        choice.append({**_record(p), "choices": options, "gold": gold})
    put("level2_choice.jsonl", choice)
    put("words.jsonl", [_record(p) for p in word_problems(words, "test", 0)])
    for name, path in sorted(benchmarks.items()):
        put(f"{name}.jsonl", [_record(p) for p in load(path, format=BENCHMARKS[name])])
    for name in _TASK_FILES:
        shutil.copyfile(TASKS_DIR / name, out / name)
    for yaml in TASKS_DIR.glob("polar_*.yaml"):
        text = yaml.read_text(encoding="utf-8")
        text = re.sub(r"(?m)^(\s*data_dir:).*$", lambda m: f"{m.group(1)} {json.dumps(str(out))}", text)
        (out / yaml.name).write_text(text, encoding="utf-8")
    return written


def is_exported(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` holds an export (the task YAMLs and the synthetic data)."""
    d = Path(data_dir).expanduser()
    return (d / "polar_level1.yaml").is_file() and (d / "level1.jsonl").is_file()


def task_manager(data_dir: str | os.PathLike | None = None):
    """An ``lm_eval.tasks.TaskManager`` that knows polar's tasks: the YAMLs written into
    ``data_dir`` by :func:`export_lm_eval` (default: this folder's, reading :data:`DEFAULT_DATA_DIR`)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(Path(data_dir).expanduser() if data_dir else TASKS_DIR))
