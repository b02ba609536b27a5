"""Synthetic word problems: 20 templates of short stories with small numbers (one or two
operations: add, subtract, multiply), written for this project.

Templates are assigned to splits by id (:data:`TEMPLATE_SPLITS`), so test templates are never
seen in training; every split mixes add, subtract, multiply and two-step templates. On
SmolLM2-135M-Instruct (full program, greedy, few-shot) they score about 7%, and 24 single edits
of the full program fix 19 of 100 (README, "Synthetic problems").
"""
from __future__ import annotations

import logging
import random

from ..errors import UserError
from .problem import Problem

logger = logging.getLogger(__name__)

# (name, subject pronoun, object pronoun, possessive)
NAMES = [
    ("Tom", "he", "him", "his"), ("Anna", "she", "her", "her"), ("Ben", "he", "him", "his"),
    ("Lily", "she", "her", "her"), ("Sam", "he", "him", "his"), ("Mia", "she", "her", "her"),
    ("Jack", "he", "him", "his"), ("Emma", "she", "her", "her"), ("Leo", "he", "him", "his"),
    ("Zoe", "she", "her", "her"), ("Omar", "he", "him", "his"), ("Nina", "she", "her", "her"),
    ("Ravi", "he", "him", "his"), ("Sara", "she", "her", "her"), ("Max", "he", "him", "his"),
    ("Lucy", "she", "her", "her"), ("Carlos", "he", "him", "his"), ("Aisha", "she", "her", "her"),
    ("Ken", "he", "him", "his"), ("Grace", "she", "her", "her"),
]
SMALL_THINGS = ["apples", "pencils", "stickers", "marbles", "cards", "books", "toy cars", "shells",
                "stamps", "balloons", "candies", "oranges"]
ANIMALS = ["ducks", "sheep", "cows", "rabbits", "birds", "goats", "horses", "chickens"]
COLORS = [("red", "blue"), ("green", "yellow"), ("black", "white"), ("big", "small")]
SHOP_ITEMS = ["cakes", "loaves of bread", "hats", "toys", "shirts", "cups", "lamps", "kites"]
CONTAINERS = [("bags", "bag"), ("boxes", "box"), ("baskets", "basket"), ("jars", "jar")]

# Each template: id, op tag, text, ranges for a,b(,c), answer(a,b,c), constraint(a,b,c).
# Slots: {n1} {p1} {o1} {s1} = first person (name, subject, object, possessive; {P1} capitalised
# subject), {n2}, {n3} other people, {x} a thing, {an} animals, {c1} {c2} colors, {it} shop item,
# {ct} {ct1} container plural/singular.
TEMPLATES = [
    dict(id="T01", op="add", text="{n1} has {a} {x}. {P1} finds {b} more. How many {x} does {n1} have now?",
         ranges=[(1, 9), (1, 9)], answer=lambda a, b, c: a + b),
    dict(id="T02", op="add", text="There are {a} {an} in the field and {b} more {an} join them. How many {an} are in the field now?",
         ranges=[(1, 9), (1, 9)], answer=lambda a, b, c: a + b),
    dict(id="T03", op="add", text="{n1} read {a} pages on Monday and {b} pages on Tuesday. How many pages did {p1} read in all?",
         ranges=[(2, 9), (2, 9)], answer=lambda a, b, c: a + b),
    dict(id="T04", op="sub", text="{n1} had {a} {x}. {P1} gave {b} of them to {n2}. How many {x} does {n1} have left?",
         ranges=[(5, 15), (1, 9)], answer=lambda a, b, c: a - b, ok=lambda a, b, c: a > b),
    dict(id="T05", op="sub", text="A bus had {a} people on it. At the first stop, {b} people got off. How many people are on the bus now?",
         ranges=[(5, 15), (2, 9)], answer=lambda a, b, c: a - b, ok=lambda a, b, c: a > b),
    dict(id="T06", op="sub", text="{n1} baked {a} cookies and ate {b} of them. How many cookies are left?",
         ranges=[(5, 15), (1, 9)], answer=lambda a, b, c: a - b, ok=lambda a, b, c: a > b),
    dict(id="T07", op="add", text="{n1} has {a} {c1} {x} and {b} {c2} {x}. How many {x} does {p1} have?",
         ranges=[(1, 9), (1, 9)], answer=lambda a, b, c: a + b),
    dict(id="T08", op="mul", text="{n1} buys {a} {ct} with {b} {x} in each {ct1}. How many {x} does {p1} buy?",
         ranges=[(2, 5), (2, 5)], answer=lambda a, b, c: a * b),
    dict(id="T09", op="add3", text="{n1} picked {a} flowers, {n2} picked {b} flowers and {n3} picked {c} flowers. How many flowers did they pick together?",
         ranges=[(2, 6), (2, 6), (2, 6)], answer=lambda a, b, c: a + b + c),
    dict(id="T10", op="add-sub", text="{n1} had {a} {x}. {P1} got {b} more and then lost {c}. How many {x} does {p1} have now?",
         ranges=[(2, 9), (1, 9), (1, 9)], answer=lambda a, b, c: a + b - c, ok=lambda a, b, c: a + b > c),
    dict(id="T11", op="sub", text="{n1} is {a} years old. {n2} is {b} years younger than {n1}. How old is {n2}?",
         ranges=[(8, 15), (1, 7)], answer=lambda a, b, c: a - b, ok=lambda a, b, c: a > b),
    dict(id="T12", op="add", text="{n1} has {a} {x}. {n2} has {b} more {x} than {n1}. How many {x} does {n2} have?",
         ranges=[(1, 9), (1, 9)], answer=lambda a, b, c: a + b),
    dict(id="T13", op="sub", text="There were {a} birds on a tree. Then {b} birds flew away. How many birds are on the tree now?",
         ranges=[(5, 15), (1, 9)], answer=lambda a, b, c: a - b, ok=lambda a, b, c: a > b),
    dict(id="T14", op="add", text="A box holds {a} {x}. {n1} puts {b} more {x} in the box. How many {x} are in the box?",
         ranges=[(1, 9), (1, 9)], answer=lambda a, b, c: a + b),
    dict(id="T15", op="mul", text="There are {a} tables and each table has {b} chairs. How many chairs are there?",
         ranges=[(2, 5), (2, 5)], answer=lambda a, b, c: a * b),
    dict(id="T16", op="sub", text="{n1} needs {a} {x} and already has {b}. How many more {x} does {p1} need?",
         ranges=[(5, 15), (1, 9)], answer=lambda a, b, c: a - b, ok=lambda a, b, c: a > b),
    dict(id="T17", op="add", text="{n1} walked {a} miles in the morning and {b} miles in the evening. How many miles did {p1} walk in all?",
         ranges=[(2, 9), (2, 9)], answer=lambda a, b, c: a + b),
    dict(id="T18", op="mul", text="{n1} has {a} coins. {n2} has twice as many coins as {n1}. How many coins does {n2} have?",
         ranges=[(1, 9)], answer=lambda a, b, c: 2 * a),
    dict(id="T19", op="sub-sub", text="A shop had {a} {it}. It sold {b} in the morning and {c} in the afternoon. How many {it} are left?",
         ranges=[(8, 15), (1, 5), (1, 5)], answer=lambda a, b, c: a - b - c, ok=lambda a, b, c: a > b + c),
    dict(id="T20", op="add", text="{n1} scored {a} points in the first game and {b} points in the second game. How many points did {p1} score in total?",
         ranges=[(2, 9), (2, 9)], answer=lambda a, b, c: a + b),
]
TEMPLATE_BY_ID = {t["id"]: t for t in TEMPLATES}

TEMPLATE_SPLITS = {
    "train": ["T01", "T02", "T04", "T05", "T07", "T08", "T10", "T11", "T13", "T18"],
    "validation": ["T03", "T06", "T09", "T17"],
    "test": ["T12", "T14", "T15", "T16", "T19", "T20"],
}




def _render(template: dict, rng: random.Random) -> tuple[str, int]:
    while True:
        nums = [rng.randint(lo, hi) for lo, hi in template["ranges"]] + [0, 0]
        a, b, c = nums[:3]
        if template.get("ok", lambda *_: True)(a, b, c):
            break
    people = rng.sample(NAMES, 3)
    c1, c2 = rng.choice(COLORS)
    ct, ct1 = rng.choice(CONTAINERS)
    slots = dict(a=a, b=b, c=c, n1=people[0][0], p1=people[0][1], P1=people[0][1].capitalize(),
                 o1=people[0][2], s1=people[0][3], n2=people[1][0], n3=people[2][0],
                 x=rng.choice(SMALL_THINGS), an=rng.choice(ANIMALS), c1=c1, c2=c2,
                 it=rng.choice(SHOP_ITEMS), ct=ct, ct1=ct1)
    return template["text"].format(**slots), template["answer"](a, b, c)



def word_problems(n: int, split: str = "test", seed: int = 0) -> list[Problem]:
    """``n`` distinct word problems from the templates of ``split`` (round robin over them, so
    templates are balanced), deterministic in ``(n, split, seed)``. A template whose questions are
    used up (T15 has 16) drops out; past all of them the problems repeat in order (a warning is
    logged). Ids name the template: ``words-T12-test-s0-3``. ``ValueError`` for an unknown split or
    a negative ``n``."""
    if split not in TEMPLATE_SPLITS:
        raise UserError(f"split must be one of {tuple(TEMPLATE_SPLITS)}, got {split!r}")
    if n < 0:
        raise UserError(f"n must be >= 0, got {n}")
    ids = TEMPLATE_SPLITS[split]
    rng = random.Random(f"polar-words/{split}/{seed}")
    found: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    exhausted: set[str] = set()
    misses, k = 0, 0
    while len(found) < n and len(exhausted) < len(ids):
        tid = ids[k % len(ids)]
        if tid in exhausted:
            k += 1
            continue
        question, answer = _render(TEMPLATE_BY_ID[tid], rng)
        if question in seen:
            misses += 1
            if misses >= 500:  # a template with 500 repeats in a row is used up
                exhausted.add(tid)
                misses, k = 0, k + 1
            continue
        misses = 0
        seen.add(question)
        found.append((question, answer, tid))
        k += 1
    if len(found) < n:
        logger.warning("the %s word templates have %d distinct problems; repeating them to reach %d",
                       split, len(found), n)
    return [Problem(id=f"words-{tid}-{split}-s{seed}-{i}", question=q, answer=str(a), source="words")
            for i, (q, a, tid) in ((i, found[i % len(found)]) for i in range(n))]
