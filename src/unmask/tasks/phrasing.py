"""Varied wordings of the "math" reasoning (the SFT targets of the testbed-varied model, issue 14).

``vary_math(steps, answer, rng)`` renders the `Step`s of a problem (``arithmetic.problem_steps``) with
a style drawn from ``rng``: each line gets one of several paraphrases around the SAME ``a op b = c``
equation, the first line and optional opener/closer lines vary, independent steps may change order
(the days of the "days" template and the sums over them; the ``a * m`` products of pack steps may
be worked out first), and the last line is ``#### answer`` exactly as in the canonical target. The
model trained on it should be unsure about wording and sure about numbers, like LLaDA-8B on GSM8K.
"""

from __future__ import annotations

import random

from unmask.tasks.arithmetic import Step

OPENERS = [
    "Let's go step by step.",
    "Step by step:",
    "We solve it step by step.",
    "Let's work it out.",
    "Here is the work.",
    "Let's think.",
]
CLOSERS = ["So the answer is {n}.", "The answer is {n}.", "That gives {n}.", "So we get {n}.", "In the end: {n}."]
CONNECTORS = ["Then", "Next,", "After that,", "Now", "Later,"]
START = [
    "{name} starts with {x} {obj}.",
    "At first {name} has {x} {obj}.",
    "{name} has {x} {obj} at the start.",
    "{name} begins with {x} {obj}.",
    "First, {name} has {x} {obj}.",
    "In the beginning, {name} has {x} {obj}.",
    "Start: {x} {obj}.",
    "{name} has {x} {obj}.",
]
# {S}: subject (capitalised), {s}: pronoun, {pres}/{past}/{ing}: the action, {eq}: the equation,
# {res}: "gives" for growth, "leaves" for a loss. Frames marked True start with the subject (may get a connector).
ACT = [
    (True, "{S} {pres}: {eq}."),
    (True, "{S} {pres}, so {s} has {eq}."),
    (False, "After {ing}, {s} has {eq}."),
    (False, "{Ing} {res} {eq}."),
    (False, "Now {s} has {eq}, since {s} {past}."),
    (False, "{eq}, because {s} {past}."),
    (True, "{S} {pres}. That {res} {eq}."),
    (True, "{S} {pres} and has {eq}."),
    (False, "{S} now has {eq}."),
    (True, "{S} {pres}: {s} has {eq} now."),
    (False, "{eq} after {s} {past}."),
]
PRODUCT = [
    "{D}: {eq}.",
    "For {d}: {eq}.",
    "{D} make {eq}.",
    "{D} come to {eq}.",
    "{eq} for {d}.",
    "{D} give {eq} {obj}.",
]
COMPARE = [
    "{who} has {short}: {eq}.",
    "{who} has {rel}: {eq}.",
    "{who} has {rel}, so {s} has {eq}.",
    "Since {who} has {rel}, {s} has {eq}.",
    "{who}: {eq}.",
    "For {who}: {eq}.",
    "{who} has {eq} {obj}.",
    "{who} has {rel}. That is {eq}.",
    "{eq} for {who}.",
    "{who} has {eq}, which is {short}.",
]
DAY = [
    "{day}: {value} {obj}.",
    "On {day}: {value} {obj}.",
    "On {day} the {noun} {verb} {value}.",
    "{day} has {value} {obj}.",
    "{value} {obj} on {day}.",
    "The {noun} {verb} {value} {obj} on {day}.",
]
DAY_DERIVED = [
    "{day}: {eq}.",
    "On {day}: {eq}.",
    "On {day} the {noun} {verb} {eq}.",
    "{day} has {rel}: {eq}.",
    "For {day}: {eq}.",
    "{eq} {obj} on {day}.",
    "On {day}, {rel}: {eq}.",
]
FIRST_SUM = [
    "{a} and {b}: {eq}.",
    "{a} plus {b}: {eq}.",
    "Together {a} and {b}: {eq}.",
    "So far: {eq}.",
    "{a} and {b} make {eq}.",
]
NEXT_SUM = [
    "Adding {d}: {eq}.",
    "Plus {d}: {eq}.",
    "With {d}: {eq}.",
    "{d} brings it to {eq}.",
    "Add {d}: {eq}.",
    "Then {d}: {eq}.",
]
RUNNING_SUM = ["Total so far: {eq}.", "Running total: {eq}.", "So far {eq}.", "Together: {eq}."]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _act_line(st: Step, rng: random.Random) -> str:
    f = st.f
    use_name = rng.random() < 0.5
    subj = f["subj"] if use_name else f["pron"]
    res = "leaves" if f["op"] in ("sub", "div") else rng.choice(["gives", "makes"])
    starts_with_subject, frame = rng.choice(ACT)
    if starts_with_subject and rng.random() < 0.25:
        frame = rng.choice(CONNECTORS) + " " + frame.replace("{S}", "{subj}", 1)
    return frame.format(
        S=_cap(subj),
        subj=subj,
        s=f["pron"],
        pres=f["pres"],
        past=f["past"],
        ing=f["ing"],
        Ing=_cap(f["ing"]),
        eq=f["eq"],
        res=res,
    )


def _line(st: Step, rng: random.Random) -> str:
    f = st.f
    if st.kind == "start":
        return rng.choice(START).format(**f)
    if st.kind == "act":
        return _act_line(st, rng)
    if st.kind == "product":
        d = rng.choice(f["descs"])
        return rng.choice(PRODUCT).format(D=_cap(d), d=d, eq=f["eq"], obj=f["obj"])
    if st.kind == "compare":
        return _cap(rng.choice(COMPARE).format(s=f["pron"], **{k: v for k, v in f.items() if k != "pron"}))
    raise ValueError(f"no paraphrase for a step of kind {st.kind!r}")


def _days(steps: list[Step], rng: random.Random) -> list[str]:
    """Day lines in a random order that keeps each derived day after the day it is derived from, then
    the sum over the days in a random order (or a running total after each day)."""
    days = [s for s in steps if s.kind == "day"]
    order: list[int] = []
    ready = [0] + [i for i in range(1, len(days)) if not days[i].f["derived"]]
    while ready:
        i = ready.pop(rng.randrange(len(ready)))
        order.append(i)
        if i + 1 < len(days) and days[i + 1].f["derived"]:
            ready.append(i + 1)
    lines = []
    running = rng.random() < 0.3
    sum_order = order if running or rng.random() < 0.5 else rng.sample(order, len(order))
    for i in order:
        f = days[i].f
        lines.append(_cap(rng.choice(DAY_DERIVED if f["derived"] else DAY).format(**f)))
    if running:
        out, total = [], 0
        for k, (i, line) in enumerate(zip(order, lines, strict=True)):
            out.append(line)
            v = days[i].f["value"]
            if k:
                out.append(rng.choice(RUNNING_SUM).format(eq=f"{total} + {v} = {total + v}"))
            total += v
        return out
    total = days[sum_order[0]].f["value"]
    for k, i in enumerate(sum_order[1:], start=1):
        v = days[i].f["value"]
        eq = f"{total} + {v} = {total + v}"
        if k == 1:
            line = rng.choice(FIRST_SUM).format(a=days[sum_order[0]].f["day"], b=days[i].f["day"], eq=eq)
        else:
            line = rng.choice(NEXT_SUM).format(d=days[i].f["day"], eq=eq)
        lines.append(line)
        total += v
    return lines


def vary_math(steps: list[Step], answer: int, rng: random.Random) -> list[str]:
    """The lines of a varied target (the last one ``#### answer``) for the steps of one problem."""
    if any(s.kind == "day" for s in steps):
        body = _days(steps, rng)
    else:
        ordered = list(steps)
        if rng.random() < 0.3:  # work out the products of the pack steps first: no value changes
            first = [s for s in ordered[1:] if s.kind == "product"]
            ordered = ordered[:1] + first + [s for s in ordered[1:] if s.kind != "product"]
        if ordered[0].kind == "start" and rng.random() < 0.15:  # the start value is in the problem already
            ordered = ordered[1:]
        body = [_line(s, rng) for s in ordered]
    lines = [rng.choice(OPENERS)] if rng.random() < 0.3 else []
    lines += body
    if rng.random() < 0.35:
        lines.append(rng.choice(CLOSERS).format(n=answer))
    return [*lines, f"#### {answer}"]
