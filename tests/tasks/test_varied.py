"""Varied SFT targets (issue 14, testbed-varied): same prompts, answers and scorers; wording drawn per row."""

import random
import re

import pytest

from unmask.tasks.arithmetic import LINE_RE, ArithmeticTask, problem_steps
from unmask.tasks.code import FAMILIES, STYLES, CodeTask
from unmask.tasks.corpus import sft_corpus
from unmask.tasks.long import LongTask

MATH, CODE = ArithmeticTask(), CodeTask()
TEMPLATES = ("inv", "money", "groups", "compare", "days")


@pytest.fixture(scope="module")
def math_keys():
    return [k for k, _ in MATH.keyed_examples("train", 400, seed=7)]


def _equations(text: str) -> list[tuple[int, str, int, int]]:
    return [(int(a), op, int(b), int(c)) for a, op, b, c in LINE_RE.findall(text)]


def _correct(a: int, op: str, b: int, c: int) -> bool:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // b if a % b == 0 else None}[op] == c


def test_math_variant_keeps_prompt_answer_and_is_deterministic(math_keys):
    for i, key in enumerate(math_keys[:100]):
        ex = MATH.render(key)
        var = MATH.render_varied(key, random.Random(i))
        assert (var.task, var.id, var.prompt, var.reference) == (ex.task, ex.id, ex.prompt, ex.reference)
        assert var == MATH.render_varied(key, random.Random(i))
        assert var.target.split("\n")[-1] == f"#### {ex.reference}"
        assert MATH.score(var, var.target) == 1.0


def test_math_variant_lines_keep_correct_equations(math_keys):
    assert {k.split("|")[1] for k in math_keys} == set(TEMPLATES)
    for i, key in enumerate(math_keys):
        canonical = MATH.render(key).target
        var = MATH.render_varied(key, random.Random(1000 + i)).target
        for line in var.split("\n"):
            for eq in _equations(line):
                assert _correct(*eq), (key, line)
            assert len(_equations(line)) <= 1, line  # one operation per line
        if "|days|" in key:  # the day values are the same; the sums may go in another order
            days = [s for s in problem_steps(key)[1] if s.kind == "day" and s.f["derived"]]
            assert all(s.f["eq"] in var for s in days)
            assert len(_equations(var)) == len(_equations(canonical))
        else:  # exactly the canonical equations (products may come first)
            assert sorted(_equations(var)) == sorted(_equations(canonical)), key


def test_math_variants_are_many_and_varied(math_keys):
    per_key = []
    for key in math_keys[:40]:
        targets = {MATH.render_varied(key, random.Random(f"{key}/{j}")).target for j in range(20)}
        per_key.append(len(targets))
    assert sum(per_key) / len(per_key) > 15  # of 20 draws
    lines = set()
    for i, key in enumerate(math_keys):
        for j in range(3):
            for line in MATH.render_varied(key, random.Random(i * 3 + j)).target.split("\n"):
                lines.add(re.sub(r"\d+", "N", re.sub(r"\b[A-Z][a-z]+\b", "W", line)))
    assert len(lines) > 300  # distinct line shapes (numbers and capitalised words abstracted away)


def test_days_order_varies():
    key = next(k for k, _ in MATH.keyed_examples("train", 300, seed=3) if "|days|" in k and k.count("|") >= 5)
    firsts = {MATH.render_varied(key, random.Random(j)).target.split("\n")[0] for j in range(30)}
    assert len(firsts) > 5


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_code_style_passes_the_tests(family):
    keys = [k for k, _ in CODE.keyed_examples("train", 3000, seed=1) if k.split("|")[1] == family]
    for style in range(1 + len(STYLES.get(family, ()))):
        key = keys[style % len(keys)]
        ex = CODE.render_varied(key, random.Random(style), style=style)
        assert (ex.prompt, ex.reference) == (CODE.render(key).prompt, CODE.render(key).reference)
        assert CODE.score(ex, ex.target) == 1.0, ex.target


def test_code_variants_random_draws_pass_and_vary():
    pairs = CODE.keyed_examples("train", 40, seed=9)
    targets = set()
    for i, (key, _) in enumerate(pairs):
        var = CODE.render_varied(key, random.Random(i))
        assert var == CODE.render_varied(key, random.Random(i))
        assert CODE.score(var, var.target) == 1.0, var.target
        targets |= {CODE.render_varied(key, random.Random(f"{i}/{j}")).target for j in range(6)}
    assert len(targets) > 3 * len(pairs)
    assert all(len(STYLES[f]) >= 1 for f in FAMILIES)


def test_long_variant_scores_and_keeps_sections():
    task = LongTask()
    for i, (key, ex) in enumerate(task.keyed_examples("train", 5, seed=2)):
        var = task.render_varied(key, random.Random(i))
        assert (var.prompt, var.reference) == (ex.prompt, ex.reference) and var.target != ex.target
        assert task.score(var, var.target) == 1.0


def test_corpus_varied_switch():
    plain = sft_corpus({"math": 30, "code": 10}, seed=4)
    varied = sft_corpus({"math": 30, "code": 10}, seed=4, varied=True)
    assert varied == sft_corpus({"math": 30, "code": 10}, seed=4, varied=True)
    assert [e.id for e in plain] == [e.id for e in varied] and [e.prompt for e in plain] == [e.prompt for e in varied]
    assert sum(a.target != b.target for a, b in zip(plain, varied, strict=True)) > 30
    # the same key in other rows (other seeds) gets other wordings
    key = MATH.keyed_examples("train", 1, seed=0)[0][0]
    targets = {MATH.varied_examples("train", 1, seed=0)[0].target}
    targets |= {MATH.render_varied(key, random.Random(f"vary/math/train/0/{i}")).target for i in range(1, 10)}
    assert len(targets) > 5


def test_varied_share_mixes_canonical_and_varied_rows():
    from unmask.tasks.registry import get_task

    task = get_task("math")
    canonical = task.examples("train", 200, seed=3)
    half = task.varied_examples("train", 200, seed=3, share=0.5)
    assert [e.id for e in half] == [e.id for e in canonical]  # the same examples, in the same order
    same = sum(a.target == b.target for a, b in zip(half, canonical, strict=True))
    assert 60 <= same <= 140  # about half kept their canonical target (a varied one may match it by chance)
    assert task.varied_examples("train", 200, seed=3, share=0.5) == half  # deterministic
    assert task.varied_examples("train", 200, seed=3, share=0.0) == canonical
