"""Task data: math word problems and multiple-choice questions as :class:`Problem` records.

``load(path, format=None)`` reads one benchmark file (format named, or detected from the file's
name and content). Records that cannot be used (missing fields, an answer that is not a single
number where one is required, a JSONL line that is not JSON) are skipped and reported - the
:class:`LoadReport` lists ``(location, reason)`` for each - never fatal; a file that is not of the
format at all raises ``ValueError``.

Formats (see ``shared/data/README.md``):

==========  ===================================  =====================================================
name        file                                 fields used
==========  ===================================  =====================================================
gsm8k       JSONL                                ``question``; answer after ``#### `` in ``answer``
mawps       JSONL                                ``input``, ``target`` (float), ``idx``
asdiv       XML (``<Problem>``)                  ``Body`` + ``Question``, ``Answer`` minus ``(unit)``
svamp       JSON list                            ``Body`` + ``Question``, ``Answer`` (float), ``ID``
math        JSONL (MATH / MATH500)               ``problem``, ``answer`` (else last ``\\boxed`` of
                                                 ``solution``), ``level``, ``unique_id``
dart        JSON list or JSONL                   ``query``, ``gt_ans``, optional ``level``
mmlu_pro    JSON list or JSONL                   ``question``, ``options``, ``answer`` (letter)
polar       PoLar supervision JSON               ``question`` / ``sample_info.question``,
                                                 ``gt_ans`` / ``ground_truth`` / ``answer``,
                                                 ``final_valid_transitions``
==========  ===================================  =====================================================

Synthetic problems live in :mod:`.levels`; CLI ``--data`` specs in :mod:`.specs`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import UserError, UserFileNotFoundError
from .answers import last_boxed
from .problem import Problem, Supervision
from .prompts import CHOICE_LETTERS

logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What ``load`` did with a file: how many problems it kept and which records it skipped."""

    path: str
    format: str
    loaded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.path} ({self.format}): {self.loaded} loaded, {len(self.skipped)} skipped"]
        lines += [f"  {loc}: {reason}" for loc, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


class _Skip(Exception):
    """A record that cannot be used; the message says why."""


FORMATS: tuple[str, ...] = ("gsm8k", "mawps", "asdiv", "svamp", "math", "dart", "mmlu_pro", "polar")
FORMAT_ALIASES = {"math500": "math", "mmlu-pro": "mmlu_pro", "mmlupro": "mmlu_pro", "dart-math": "dart",
                   "dart_math": "dart", "supervision": "polar"}


def _canonical_format(name: str) -> str:
    key = name.strip().lower()
    key = FORMAT_ALIASES.get(key, key)
    if key not in FORMATS:
        raise UserError(f"unknown data format {name!r}; expected one of {FORMATS}")
    return key


# ---------------------------------------------------------------------------------------------
# reading records


def _read_json_records(path: Path, skipped: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """``(location, record)`` pairs of a JSON (list / object) or JSONL file.

    Raises ``ValueError`` when the file is neither; bad JSONL lines are reported in ``skipped``.
    """
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        raise UserError(f"{path}: empty file")
    if stripped[0] not in "[{":
        raise UserError(f"{path}: not a JSON or JSONL file (starts with {stripped[:20]!r})")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        return [(f"{path.name}: record {i}", r) for i, r in enumerate(whole)]
    if isinstance(whole, dict):
        if isinstance(whole.get("samples"), list):
            return [(f"{path.name}: samples[{i}]", r) for i, r in enumerate(whole["samples"])]
        if whole and all(isinstance(v, dict) for v in whole.values()) and not _looks_like_record(whole):
            return [(f"{path.name}: key {k!r}", {"__key__": k, **v}) for k, v in whole.items()]
        return [(f"{path.name}: record 0", whole)]
    records: list[tuple[str, Any]] = []
    bad = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"{path.name}: line {lineno}", json.loads(line)))
        except json.JSONDecodeError as err:
            bad += 1
            skipped.append((f"{path.name}: line {lineno}", f"not valid JSON ({err.msg})"))
    if not records:
        raise UserError(f"{path}: not a JSON or JSONL file ({bad} lines, none valid JSON)")
    return records


_RECORD_KEYS = {"question", "answer", "input", "target", "problem", "solution", "query", "gt_ans",
                "Body", "Question", "Answer", "options", "final_valid_transitions", "sample_info"}


def _looks_like_record(obj: dict) -> bool:
    return bool(_RECORD_KEYS & set(obj))


def _detect_record_format(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return None
    keys = set(rec)
    if "final_valid_transitions" in keys or "sample_info" in keys:
        return "polar"
    if "options" in keys and "question" in keys:
        return "mmlu_pro"
    if "query" in keys and "gt_ans" in keys:
        return "dart"
    if "input" in keys and "target" in keys:
        return "mawps"
    if "Body" in keys and "Question" in keys and "Answer" in keys:
        return "svamp"
    if "problem" in keys and ("answer" in keys or "solution" in keys):
        return "math"
    if "question" in keys and isinstance(rec.get("answer"), str) and "####" in rec["answer"]:
        return "gsm8k"
    if "question" in keys and ({"gt_ans", "ground_truth"} & keys):
        return "polar"
    return None


def detect_format(path: str | Path) -> str:
    """The format of a data file, from its name and content; ``ValueError`` when unknown."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return "asdiv"
    head = path.read_text(encoding="utf-8", errors="replace")[:4096].lstrip()
    if head.startswith("<"):
        return "asdiv"
    records = _read_json_records(path, [])
    for _, rec in records[:20]:
        fmt = _detect_record_format(rec)
        if fmt is not None:
            return fmt
    first = records[0][1]
    keys = sorted(first)[:12] if isinstance(first, dict) else type(first).__name__
    raise UserError(f"{path}: unrecognised data format (first record: {keys}); name it, e.g. gsm8k:{path}")


# ---------------------------------------------------------------------------------------------
# answers


_NUM_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$")


def _number_text(value: Any) -> str:
    """A float/int/str number as canonical text: ``43.0 -> "43"``, ``"1,000" -> "1000"``."""
    if isinstance(value, bool):
        raise _Skip(f"answer {value!r} is not a number")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise _Skip(f"answer {value!r} is not finite")
        if float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    text = str(value).strip().replace(",", "")
    if not _NUM_RE.match(text):
        raise _Skip(f"answer {value!r} is not a number")
    if "." in text:
        f = float(text)
        return str(int(f)) if f.is_integer() else text
    return str(int(text))


def _require(rec: Any, *keys: str) -> None:
    if not isinstance(rec, dict):
        raise _Skip(f"record is a {type(rec).__name__}, not an object")
    missing = [k for k in keys if rec.get(k) in (None, "")]
    if missing:
        raise _Skip(f"missing field(s) {missing}")


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    m = re.search(r"\d+", str(value))
    return int(m.group()) if m else None


# ---------------------------------------------------------------------------------------------
# per-format record parsers: (record, index) -> Problem, raising _Skip


def _gsm8k(rec: Any, i: int) -> Problem:
    _require(rec, "question", "answer")
    if "####" not in rec["answer"]:
        raise _Skip("answer has no '#### ' final answer")
    final = rec["answer"].rsplit("####", 1)[1].strip()
    return Problem(id=f"gsm8k-{i}", question=rec["question"].strip(), answer=_number_text(final), source="gsm8k")


def _mawps(rec: Any, i: int) -> Problem:
    _require(rec, "input", "target")
    pid = rec.get("idx", i)
    return Problem(id=f"mawps-{pid}", question=rec["input"].strip(), answer=_number_text(rec["target"]),
                   source="mawps")


def _svamp(rec: Any, i: int) -> Problem:
    _require(rec, "Body", "Question", "Answer")
    question = f"{rec['Body'].strip()} {rec['Question'].strip()}"
    return Problem(id=f"svamp-{rec.get('ID', i)}", question=question, answer=_number_text(rec["Answer"]),
                   source="svamp")


def _math(rec: Any, i: int) -> Problem:
    _require(rec, "problem")
    answer = rec.get("answer")
    if answer in (None, "") and rec.get("solution"):
        answer = last_boxed(rec["solution"])
    if answer in (None, ""):
        raise _Skip("no 'answer' and no \\boxed answer in 'solution'")
    pid = rec.get("unique_id") or f"math-{i}"
    return Problem(id=str(pid), question=rec["problem"].strip(), answer=str(answer).strip(), source="math",
                   level=_int_or_none(rec.get("level")))


def _dart(rec: Any, i: int) -> Problem:
    _require(rec, "query", "gt_ans")
    pid = rec.get("id") or rec.get("query_id") or f"dart-{i}"
    return Problem(id=str(pid), question=rec["query"].strip(), answer=str(rec["gt_ans"]).strip(), source="dart",
                   level=_int_or_none(rec.get("level")))


def _mmlu_pro(rec: Any, i: int) -> Problem:

    _require(rec, "question", "options")
    options = rec["options"]
    if not isinstance(options, list) or not options or len(options) > len(CHOICE_LETTERS):
        raise _Skip(f"options must be a list of 1..{len(CHOICE_LETTERS)} strings")
    letter = rec.get("answer")
    if letter in (None, "") and isinstance(rec.get("answer_index"), int):
        letter = CHOICE_LETTERS[rec["answer_index"]]
    letter = str(letter or "").strip().upper()
    if len(letter) != 1 or letter not in CHOICE_LETTERS[: len(options)]:
        raise _Skip(f"answer {rec.get('answer')!r} is not one of the {len(options)} option letters")
    pid = rec.get("question_id", i)
    return Problem(id=f"mmlu_pro-{pid}", question=rec["question"].strip(), answer=letter, source="mmlu_pro",
                   choices=[str(o) for o in options], level=None)


def _polar_question(rec: dict) -> str | None:
    q = rec.get("question")
    if not q and isinstance(rec.get("sample_info"), dict):
        q = rec["sample_info"].get("question")
    return q


def _polar_answer(rec: dict) -> Any:
    for key in ("gt_ans", "ground_truth", "answer"):
        if rec.get(key) not in (None, ""):
            return rec[key]
    info = rec.get("sample_info")
    if isinstance(info, dict):
        for key in ("gt_ans", "ground_truth", "answer"):
            if info.get(key) not in (None, ""):
                return info[key]
    return None


def _polar(rec: Any, i: int) -> Problem:
    if not isinstance(rec, dict):
        raise _Skip(f"record is a {type(rec).__name__}, not an object")
    question = _polar_question(rec)
    if not question:
        raise _Skip("no 'question' or 'sample_info.question'")
    answer = _polar_answer(rec)
    if answer is None:
        raise _Skip("no 'gt_ans', 'ground_truth' or 'answer'")
    pid = rec.get("id") or rec.get("__key__") or (rec.get("sample_info") or {}).get("id") or f"polar-{i}"
    return Problem(id=str(pid), question=str(question).strip(), answer=str(answer).strip(), source="polar")


_PARSERS: dict[str, Callable[[Any, int], Problem]] = {
    "gsm8k": _gsm8k, "mawps": _mawps, "svamp": _svamp, "math": _math, "dart": _dart,
    "mmlu_pro": _mmlu_pro, "polar": _polar,
}


# ASDiv answers: "9 (apples)", "5/2", "-(1/3)", "1.5 (hours)"; several values ("6; 9"), ratios
# ("3:4"), times and names are not a single number and are skipped.
_ASDIV_UNIT = re.compile(r"\s*\([^()]*[A-Za-z][^()]*\)\s*$")
_ASDIV_NUMBER = re.compile(r"^[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?$")


def _asdiv_answer(raw: str) -> str:
    text = _ASDIV_UNIT.sub("", raw.strip()).strip()
    m = re.fullmatch(r"([-+]?)\((\d+/\d+)\)", text)  # "-(1/3)"
    if m:
        text = m.group(1) + m.group(2)
    if not _ASDIV_NUMBER.match(text):
        raise _Skip(f"answer {raw!r} is not a single number")
    if "/" in text:
        return text.replace(",", "")
    return _number_text(text)


def _load_asdiv(path: Path, skipped: list[tuple[str, str]]) -> list[Problem]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise UserError(f"{path}: not an ASDiv XML file ({err})") from err
    elements = root.findall(".//Problem")
    if not elements:
        raise UserError(f"{path}: not an ASDiv XML file (no <Problem> elements)")
    problems = []
    for i, el in enumerate(elements):
        pid = el.get("ID") or f"asdiv-{i}"
        try:
            body, question, answer = (el.findtext(tag) for tag in ("Body", "Question", "Answer"))
            if not question or answer is None:
                raise _Skip("missing <Question> or <Answer>")
            text = f"{(body or '').strip()} {question.strip()}".strip()
            problems.append(Problem(id=pid, question=text, answer=_asdiv_answer(answer), source="asdiv",
                                    level=_int_or_none(el.get("Grade"))))
        except _Skip as reason:
            skipped.append((f"{path.name}: problem {pid}", str(reason)))
    return problems


def _iter_parsed(path: Path, fmt: str, skipped: list[tuple[str, str]]) -> Iterator[tuple[Any, Problem]]:
    records = _read_json_records(path, skipped)
    first = next((rec for _, rec in records if isinstance(rec, dict)), None)
    detected = _detect_record_format(first) if first is not None else None
    if fmt == "polar":
        fits = first is not None and _polar_question(first) is not None
    else:
        fits = detected == fmt
    if not fits:
        keys = sorted(first)[:12] if isinstance(first, dict) else None
        raise UserError(f"{path}: not a {fmt} file (first record keys: {keys}"
                         + (f"; it looks like {detected}" if detected else "") + ")")
    parser = _PARSERS[fmt]
    for i, (location, rec) in enumerate(records):
        try:
            yield rec, parser(rec, i)
        except _Skip as reason:
            skipped.append((location, str(reason)))


def load(path: str | Path, format: str | None = None, report: bool = False):
    """Load the problems of one data file.

    ``format`` is one of ``FORMATS`` (aliases ``math500``, ``mmlu-pro``); None detects it.
    Returns ``list[Problem]``, or ``(list[Problem], LoadReport)`` with ``report=True``. Skipped
    records are also logged (one warning per file). Raises ``FileNotFoundError`` for a missing file
    and ``ValueError`` for a file that is not of the format.
    """
    path = Path(path)
    if not path.is_file():
        raise UserFileNotFoundError(f"data file not found: {path}")
    fmt = _canonical_format(format) if format else detect_format(path)
    skipped: list[tuple[str, str]] = []
    if fmt == "asdiv":
        problems = _load_asdiv(path, skipped)
    else:
        problems = [p for _, p in _iter_parsed(path, fmt, skipped)]
    problems = _dedupe_ids(problems)
    rep = LoadReport(path=str(path), format=fmt, loaded=len(problems), skipped=skipped)
    if skipped:
        logger.warning("%s", rep)
    return (problems, rep) if report else problems


def _dedupe_ids(problems: list[Problem]) -> list[Problem]:
    seen: dict[str, int] = {}
    for p in problems:
        if p.id in seen:
            seen[p.id] += 1
            p.id = f"{p.id}#{seen[p.id]}"
        else:
            seen[p.id] = 0
    return problems


def _program_list(value: Any, location: str, skipped: list[tuple[str, str]]) -> list[list[int]]:
    if value is None:
        return []
    if not isinstance(value, list):
        skipped.append((location, "transitions are not a list"))
        return []
    programs = []
    for prog in value:
        if isinstance(prog, list) and prog and all(isinstance(x, int) and not isinstance(x, bool) for x in prog):
            programs.append(list(prog))
        else:
            skipped.append((location, f"transition {str(prog)[:60]} is not a non-empty list of layer indices"))
    return programs


def load_supervision(path: str | Path, report: bool = False):
    """Load a PoLar supervision file (``merged_mcts_samples.json``) -> ``list[Supervision]``.

    Each sample keeps its ``final_valid_transitions`` (programs: lists of layer indices),
    ``final_invalid_transitions`` and ``initial_score``. Program validity against a model's depth
    is checked by the caller (``polar.programs``). Returns ``(samples, LoadReport)`` with
    ``report=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserFileNotFoundError(f"data file not found: {path}")
    skipped: list[tuple[str, str]] = []
    samples = []
    records = _read_json_records(path, skipped)
    if not any(isinstance(r, dict) and _polar_question(r) and "final_valid_transitions" in r for _, r in records[:50]):
        raise UserError(f"{path}: not a PoLar supervision file (no sample with 'question' or "
                         f"'sample_info.question' and 'final_valid_transitions')")
    for i, (location, rec) in enumerate(records):
        try:
            problem = _polar(rec, i)
        except _Skip as reason:
            skipped.append((location, str(reason)))
            continue
        score = rec.get("initial_score")
        samples.append(Supervision(
            problem=problem,
            valid_programs=_program_list(rec.get("final_valid_transitions"), location, skipped),
            invalid_programs=_program_list(rec.get("final_invalid_transitions"), location, skipped),
            initial_score=float(score) if isinstance(score, (int, float)) else None,
        ))
    _dedupe_ids([s.problem for s in samples])
    rep = LoadReport(path=str(path), format="polar", loaded=len(samples), skipped=skipped)
    if skipped:
        logger.warning("%s", rep)
    return (samples, rep) if report else samples


