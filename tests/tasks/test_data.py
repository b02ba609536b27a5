import json
import re
from pathlib import Path

import pytest

from polar.tasks import levels as synthetic_module
from polar.tasks import LoadReport, Problem, load, load_supervision, resolve, synthetic
from polar.tasks.answers import parse_number

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # ../shared/data beside the repository


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# ---------------------------------------------------------------------------------------------
# inline fixtures, one per format


def test_gsm8k(tmp_path):
    f = write_jsonl(tmp_path / "test.jsonl", [
        {"question": "Q1?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "Q2?", "answer": "big\n#### 1,250"},
        {"question": "Q3?", "answer": "no final answer"},
        "{not json",
    ])
    problems, rep = load(f, report=True)
    assert rep.format == "gsm8k"
    assert [(p.question, p.answer, p.source) for p in problems] == [("Q1?", "7", "gsm8k"), ("Q2?", "1250", "gsm8k")]
    assert len({p.id for p in problems}) == 2
    reasons = dict(rep.skipped)
    assert rep.loaded == 2 and len(rep.skipped) == 2
    assert "test.jsonl: line 3" in reasons and "####" in reasons["test.jsonl: line 3"]
    assert "test.jsonl: line 4" in reasons and "JSON" in reasons["test.jsonl: line 4"]


def test_mawps(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [
        {"input": "Joan had 70 ...", "target": 43.0, "type": "singleeq", "idx": 0},
        {"input": "Half?", "target": 0.5, "type": "singleeq", "idx": 1},
        {"input": "Broken", "type": "singleeq", "idx": 2},
    ])
    problems, rep = load(f, report=True)
    assert rep.format == "mawps"
    assert [(p.id, p.answer) for p in problems] == [("mawps-0", "43"), ("mawps-1", "0.5")]
    assert len(rep.skipped) == 1 and "target" in rep.skipped[0][1]


ASDIV_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<Machine-Reading-Corpus-File><ProblemSet>
<Problem ID="nluds-0001" Grade="1" Source="x"><Body>Seven red apples and two green apples.</Body>
<Question>How many apples?</Question><Answer>9 (apples)</Answer></Problem>
<Problem ID="nluds-0002" Grade="2" Source="x"><Body>B</Body><Question>Q?</Question><Answer>5/2</Answer></Problem>
<Problem ID="nluds-0003" Grade="3" Source="x"><Body>B</Body><Question>Q?</Question><Answer>3:4</Answer></Problem>
<Problem ID="nluds-0004" Grade="3" Source="x"><Body>B</Body><Question>Q?</Question><Answer>6 (cm); 15 (cm)</Answer></Problem>
<Problem ID="nluds-0005" Grade="3" Source="x"><Body>B</Body><Question>Q?</Question><Answer>1.5 (hours)</Answer></Problem>
<Problem ID="nluds-0006" Grade="3" Source="x"><Body>B</Body><Question>Q?</Question><Answer>Mrs. Hilt</Answer></Problem>
</ProblemSet></Machine-Reading-Corpus-File>
"""


def test_asdiv(tmp_path):
    f = tmp_path / "ASDiv.xml"
    f.write_text(ASDIV_XML)
    problems, rep = load(f, report=True)
    assert rep.format == "asdiv"
    assert [(p.id, p.answer, p.level) for p in problems] == [
        ("nluds-0001", "9", 1), ("nluds-0002", "5/2", 2), ("nluds-0005", "1.5", 3)]
    assert problems[0].question == "Seven red apples and two green apples. How many apples?"
    assert [loc for loc, _ in rep.skipped] == ["ASDiv.xml: problem nluds-0003", "ASDiv.xml: problem nluds-0004",
                                               "ASDiv.xml: problem nluds-0006"]
    assert all("not a single number" in reason for _, reason in rep.skipped)


def test_svamp(tmp_path):
    f = tmp_path / "SVAMP.json"
    f.write_text(json.dumps([
        {"ID": "chal-1", "Body": "Each pack has 3 .", "Question": "How many in 2 packs ?", "Equation": "( 3 * 2 )",
         "Answer": 6.0, "Type": "Multiplication"},
        {"ID": "chal-2", "Body": "x", "Question": "y", "Answer": None},
    ]))
    problems, rep = load(f, report=True)
    assert rep.format == "svamp"
    assert problems == [Problem("svamp-chal-1", "Each pack has 3 . How many in 2 packs ?", "6", "svamp")]
    assert len(rep.skipped) == 1


def test_math(tmp_path):
    f = write_jsonl(tmp_path / "test.jsonl", [
        {"problem": "P1", "solution": "s", "answer": "\\frac{14}{3}", "subject": "Algebra", "level": 3,
         "unique_id": "test/algebra/1.json"},
        {"problem": "P2", "solution": "so $\\boxed{\\frac{1}{2}}$.", "level": "Level 5", "type": "Algebra"},
        {"problem": "P3", "solution": "no box", "level": "Level 1"},
    ])
    problems, rep = load(f, report=True)
    assert rep.format == "math"
    assert [(p.id, p.answer, p.level) for p in problems] == [
        ("test/algebra/1.json", "\\frac{14}{3}", 3), ("math-1", "\\frac{1}{2}", 5)]
    assert len(rep.skipped) == 1


@pytest.mark.parametrize("as_jsonl", [False, True])
def test_dart(tmp_path, as_jsonl):
    records = [{"query": "Compute 2+2.", "gt_ans": "4", "level": 1}, {"query": "Q", "gt_ans": "\\sqrt{2}"}]
    f = tmp_path / ("d.jsonl" if as_jsonl else "d.json")
    if as_jsonl:
        write_jsonl(f, records)
    else:
        f.write_text(json.dumps(records))
    problems = load(f)
    assert [(p.question, p.answer, p.level, p.source) for p in problems] == [
        ("Compute 2+2.", "4", 1, "dart"), ("Q", "\\sqrt{2}", None, "dart")]


def test_mmlu_pro(tmp_path):
    f = tmp_path / "mmlu_pro_test_data.json"
    f.write_text(json.dumps([
        {"question_id": 70, "question": "Which?", "options": ["x", "y", "z"], "answer": "B", "answer_index": 1,
         "cot_content": "", "category": "math", "src": "s"},
        {"question_id": 71, "question": "Bad", "options": ["x", "y"], "answer": "F", "answer_index": 5},
    ]))
    problems, rep = load(f, report=True)
    assert rep.format == "mmlu_pro"
    assert problems == [Problem("mmlu_pro-70", "Which?", "B", "mmlu_pro", choices=["x", "y", "z"])]
    assert len(rep.skipped) == 1 and "option letters" in rep.skipped[0][1]


POLAR_SAMPLES = [
    {"question": "2 + 3?", "gt_ans": "5", "final_valid_transitions": [[0, 1, 2], [0, 2]],
     "final_invalid_transitions": [[1]], "initial_score": 1.0},
    {"sample_info": {"question": "Q2"}, "ground_truth": "\\frac12", "final_valid_transitions": [[0, 0, 1]]},
    {"question": "Q3", "answer": 7},
    {"final_valid_transitions": [[0]]},
]


@pytest.mark.parametrize("layout", ["list", "samples", "dict"])
def test_polar_supervision(tmp_path, layout):
    f = tmp_path / "merged_mcts_samples.json"
    if layout == "list":
        f.write_text(json.dumps(POLAR_SAMPLES))
    elif layout == "samples":
        f.write_text(json.dumps({"samples": POLAR_SAMPLES}))
    else:
        f.write_text(json.dumps({f"s{i}": s for i, s in enumerate(POLAR_SAMPLES)}))
    problems, rep = load(f, report=True)
    assert rep.format == "polar"
    assert [(p.question, p.answer) for p in problems] == [("2 + 3?", "5"), ("Q2", "\\frac12"), ("Q3", "7")]
    assert len(rep.skipped) == 1
    sup = load_supervision(f)
    assert [s.valid_programs for s in sup] == [[[0, 1, 2], [0, 2]], [[0, 0, 1]], []]
    assert sup[0].invalid_programs == [[1]] and sup[0].initial_score == 1.0
    if layout == "dict":
        assert [p.id for p in problems] == ["s0", "s1", "s2"]


def test_named_format_and_errors(tmp_path):
    gsm = write_jsonl(tmp_path / "a.jsonl", [{"question": "Q", "answer": "x\n#### 3"}])
    assert load(gsm, format="gsm8k")[0].answer == "3"
    with pytest.raises(ValueError, match="not a mawps file"):
        load(gsm, format="mawps")
    with pytest.raises(ValueError, match="unknown data format"):
        load(gsm, format="nope")
    text = tmp_path / "notes.txt"
    text.write_text("hello world\n")
    with pytest.raises(ValueError):
        load(text)
    other = write_jsonl(tmp_path / "o.jsonl", [{"foo": 1}])
    with pytest.raises(ValueError, match="unrecognised"):
        load(other)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.jsonl")
    bad_xml = tmp_path / "bad.xml"
    bad_xml.write_text("<a><b></a>")
    with pytest.raises(ValueError, match="ASDiv"):
        load(bad_xml)
    with pytest.raises(ValueError, match="PoLar"):
        load_supervision(gsm)


def test_resolve(tmp_path):
    gsm = write_jsonl(tmp_path / "a.jsonl", [{"question": "Q", "answer": "x\n#### 3"}])
    assert resolve(str(gsm))[0].source == "gsm8k"
    assert resolve(f"gsm8k:{gsm}")[0].answer == "3"
    assert resolve("synthetic:2:5") == synthetic(2, 5, split="test")
    assert resolve("synthetic:2:5:train:3") == synthetic(2, 5, split="train", seed=3)
    with pytest.raises(ValueError):
        resolve("synthetic:x:5")
    with pytest.raises(ValueError):
        resolve("synthetic:9:5")


# ---------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_deterministic_and_valid():
    for level in synthetic_module.SYNTHETIC_LEVELS:
        space = len(synthetic_module.level_problems(level))
        a = synthetic(level, 50, split="test", seed=1)
        assert a == synthetic(level, 50, split="test", seed=1)
        assert a != synthetic(level, 50, split="test", seed=2)
        assert len({p.id for p in a}) == 50
        questions = [p.question for p in a]
        distinct = len(set(questions))
        # distinct problems first; repeats only once the split's share of a small level is used up
        assert len(set(questions[:distinct])) == distinct
        assert distinct == 50 or distinct < space * 0.5
        for p in a:
            expr = re.fullmatch(r"What is ([\d +]+)\?", p.question).group(1)
            assert int(p.answer) == sum(int(t) for t in expr.split(" + "))
            assert p.level == level and synthetic_module.split_of(expr) == "test"


def test_synthetic_splits_disjoint():
    for level in synthetic_module.SYNTHETIC_LEVELS:
        seen = {}
        for split in synthetic_module.SPLITS:
            n = 300 if split == "train" else 100
            questions = set()
            for seed in (0, 1):
                questions |= {p.question for p in synthetic(level, n, split=split, seed=seed)}
            for other, qs in seen.items():
                assert not questions & qs, f"level {level}: {split} and {other} share problems"
            seen[split] = questions


def test_level_sizes_and_definitions():
    sizes = {level: len(synthetic_module.level_problems(level)) for level in synthetic_module.SYNTHETIC_LEVELS}
    assert sizes == {1: 100, 2: 360, 3: 961, 4: 1681, 5: 729}
    for expr, value in synthetic_module.level_problems(3):
        a, b = map(int, expr.split(" + "))
        assert 10 <= a <= 50 and 10 <= b <= 50 and a % 10 + b % 10 < 10 and value == a + b


def test_synthetic_errors():
    with pytest.raises(ValueError):
        synthetic(0, 5)
    with pytest.raises(ValueError):
        synthetic(1, 5, split="dev")


# ---------------------------------------------------------------------------------------------
# the real benchmark files in ../shared/data


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared data folder is optional)")
    return path


def count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


@pytest.mark.parametrize("folder, fmt", [("gsm8k", "gsm8k"), ("mawps", "mawps"), ("math500", "math")])
def test_shared_jsonl_all_load(folder, fmt):
    path = need(SHARED / folder / "test.jsonl")
    problems, rep = load(path, report=True)
    assert rep.format == fmt
    assert rep.skipped == []
    assert len(problems) == count_lines(path)
    assert all(p.answer and p.question for p in problems)
    assert len({p.id for p in problems}) == len(problems)
    if fmt != "math":
        assert all(parse_number(p.answer) is not None for p in problems)
    else:
        assert all(p.level in range(1, 6) for p in problems)


def test_shared_asdiv_reports_non_numeric():
    path = need(SHARED / "asdiv" / "ASDiv.xml")
    problems, rep = load(path, report=True)
    total = path.read_text().count("<Problem ")
    assert rep.loaded == len(problems) and len(problems) + len(rep.skipped) == total
    assert 100 < len(rep.skipped) < 300
    assert all(parse_number(p.answer) is not None for p in problems)
    assert all("(" not in p.answer for p in problems)
    assert isinstance(rep, LoadReport) and "skipped" in str(rep)
    assert any("3:4" in reason for _, reason in rep.skipped)


# ---------------------------------------------------------------------------------------------
# word problems


def test_word_problems_split_by_template_and_answers_follow_the_story():
    from polar.tasks.words import TEMPLATE_SPLITS, word_problems

    templates = {}
    for split in TEMPLATE_SPLITS:
        probs = word_problems(60, split, seed=0)
        assert probs == word_problems(60, split, seed=0) and len({p.id for p in probs}) == 60
        templates[split] = {p.id.split("-")[1] for p in probs}
        assert templates[split] == set(TEMPLATE_SPLITS[split])  # round robin reaches every template
        for p in probs:
            nums = [int(x) for x in re.findall(r"\d+", p.question)]
            assert int(p.answer) >= 0 and p.source == "words" and nums
    assert not templates["train"] & templates["test"] and not templates["validation"] & templates["test"]
    t12 = [p for p in word_problems(30, "test") if "-T12-" in p.id]  # "A has a, B has b more than A"
    for p in t12:
        a, b = [int(x) for x in re.findall(r"\d+", p.question)][:2]
        assert int(p.answer) == a + b


def test_words_spec():
    probs = resolve("words:7:train:3")
    assert len(probs) == 7 and all(p.source == "words" for p in probs)
    with pytest.raises(ValueError, match="bad words spec"):
        resolve("words:")
