"""Multi-step arithmetic word problems with worked reasoning ending in `#### <answer>` ("math").

Every reasoning line does one operation written as `a op b = c` (op in + - * /), numbers stay
small (operands 1..50, multipliers 2..9, exact division, all values 1..999) so that a ~15M
model can learn it. A problem is a pure function of its canonical key, e.g.
`math|inv|12|add:7|sub:5` (template, start value, operations); names, objects, verbs and
wording are drawn from a RNG seeded by the key.

Scoring requires `#### <number>`: the last such line is the answer (exact integer match); a
completion without `####` scores 0 (no fallback to a bare last number).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from unmask.tasks.base import Example, GeneratedTask

TEMPLATES = ("inv", "money", "groups", "compare", "days")
TEMPLATE_OPS = {
    "inv": ("add", "sub", "mul", "div", "pack_add", "pack_sub"),
    "money": ("add", "sub", "mul", "div", "pack_add", "pack_sub"),
    "groups": ("add", "sub", "div", "pack_add"),
    "compare": ("add", "sub", "mul", "div"),
}
OP_STEPS = {"add": 1, "sub": 1, "mul": 1, "div": 1, "pack_add": 2, "pack_sub": 2}

NAMES = [
    ("Tom", "he"), ("Mia", "she"), ("Sam", "he"), ("Lily", "she"), ("Ben", "he"), ("Emma", "she"),
    ("Jack", "he"), ("Anna", "she"), ("Leo", "he"), ("Sara", "she"), ("Max", "he"), ("Zoe", "she"),
    ("Noah", "he"), ("Ella", "she"), ("Omar", "he"), ("Nina", "she"), ("Ravi", "he"), ("Lucy", "she"),
    ("Carlos", "he"), ("Grace", "she"), ("Ivan", "he"), ("Maya", "she"), ("Paul", "he"), ("Rosa", "she"),
    ("Ken", "he"), ("Aisha", "she"), ("Luis", "he"), ("Hana", "she"), ("Finn", "he"), ("Julia", "she"),
]
OBJECTS = [
    "apples", "marbles", "stickers", "cards", "pencils", "shells", "coins", "cookies", "stamps", "beads",
    "toys", "balloons", "eggs", "books", "crayons", "rocks", "buttons", "candies", "oranges", "cups",
]
CONTAINERS = ["boxes", "bags", "packs", "jars", "baskets", "bundles", "crates", "trays"]
PLACES = ["shop", "school", "farm", "library", "bakery", "market", "club", "camp"]
ITEMS = ["books", "tickets", "toys", "pens", "shirts", "games", "plants", "hats"]
ADD_VERBS = ["buys", "finds", "gets", "receives", "picks up", "wins", "collects", "makes"]
SUB_VERBS = ["gives away", "loses", "sells", "uses", "donates", "trades away", "breaks"]
MONEY_ADD = ["earns", "gets", "finds", "wins", "is paid", "receives"]
MONEY_SUB = ["spends", "pays", "loses", "donates", "gives away", "lends out"]
ARRIVE = ["are added", "are brought in", "are delivered", "arrive"]
LEAVE = ["are sold", "are taken out", "are given away", "are used"]
CONNECT = ["Then", "Next,", "After that,", "Later,"]
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth", 6: "a sixth", 7: "a seventh",
             8: "an eighth", 9: "a ninth"}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DAY_SUBJECTS = [  # (noun, verb, verb base form, object)
    ("bakery", "sells", "sell", "cakes"), ("farmer", "picks", "pick", "apples"),
    ("library", "lends", "lend", "books"), ("factory", "makes", "make", "toys"),
    ("shop", "sells", "sell", "shirts"), ("baker", "bakes", "bake", "pies"),
    ("class", "folds", "fold", "paper cranes"), ("team", "plants", "plant", "trees"),
    ("florist", "sells", "sell", "roses"), ("school", "collects", "collect", "cans"),
]
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}

ANSWER_RE = re.compile(r"####\s*([-+]?\d[\d,]*(?:\.\d+)?)")
LINE_RE = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def extract_answer(text: str) -> str | None:
    """The number after the last `####` (commas removed), or None."""
    found = ANSWER_RE.findall(text)
    return found[-1].replace(",", "") if found else None


def answers_match(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    try:
        return float(pred) == float(gold)
    except ValueError:
        return False


def apply_op(op: str, args: tuple[int, ...], x: int) -> int:
    if op == "add":
        return x + args[0]
    if op == "sub":
        return x - args[0]
    if op == "mul":
        return x * args[0]
    if op == "div":
        return x // args[0]
    if op == "pack_add":
        return x + args[0] * args[1]
    if op == "pack_sub":
        return x - args[0] * args[1]
    raise ValueError(f"unknown op {op!r}")


def parse_op(part: str) -> tuple[str, tuple[int, ...]]:
    op, *args = part.split(":")
    return op, tuple(int(a) for a in args)


class ArithmeticTask(GeneratedTask):
    """Word problems with 2..5 arithmetic lines (`min_steps`..`max_steps`)."""

    name = "math"

    def __init__(self, min_steps: int = 2, max_steps: int = 5, max_operand: int = 50, max_mul: int = 9,
                 max_value: int = 999, mul_cap: int = 40, max_pack: int = 12):
        if not 1 <= min_steps <= max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
        self.min_steps, self.max_steps = min_steps, max_steps
        self.max_operand, self.max_mul, self.max_value = max_operand, max_mul, max_value
        self.mul_cap, self.max_pack = mul_cap, max_pack

    # ---- sampling: structure only -------------------------------------------------------
    def _args(self, op: str, x: int, rng: random.Random) -> tuple[int, ...] | None:
        M, V = self.max_operand, self.max_value
        if op == "add":
            hi = min(M, V - x)
            return (rng.randint(1, hi),) if hi >= 1 else None
        if op == "sub":
            hi = min(M, x - 1)
            return (rng.randint(1, hi),) if hi >= 1 else None
        if op == "mul":
            ks = [k for k in range(2, self.max_mul + 1) if x * k <= V] if x <= self.mul_cap else []
            return (rng.choice(ks),) if ks else None
        if op == "div":
            ks = [k for k in range(2, self.max_mul + 1) if x % k == 0 and x // k >= 1]
            return (rng.choice(ks),) if ks else None
        k = rng.randint(2, self.max_mul)
        if op == "pack_add":
            hi = min(self.max_pack, (V - x) // k)
        else:  # pack_sub
            hi = min(self.max_pack, (x - 1) // k)
        return (k, rng.randint(2, hi)) if hi >= 2 else None

    def _chain(self, ops: tuple[str, ...], x: int, steps: int, rng: random.Random) -> list[str] | None:
        parts: list[str] = []
        while steps > 0:
            options = [op for op in ops if OP_STEPS[op] <= steps]
            rng.shuffle(options)
            for op in options:
                args = self._args(op, x, rng)
                if args is not None:
                    break
            else:
                return None
            x = apply_op(op, args, x)
            steps -= OP_STEPS[op]
            parts.append(":".join([op, *map(str, args)]))
        return parts

    def _sample_days(self, steps: int, rng: random.Random) -> list[str] | None:
        ndays = rng.choice([d for d in range(2, 6) if d - 1 <= steps <= 2 * (d - 1)] or [0])
        if ndays == 0:
            return None
        derived = set(rng.sample(range(1, ndays), steps - (ndays - 1)))
        x = rng.randint(1, self.max_operand)
        parts, total = [str(x)], x
        for d in range(1, ndays):
            if d in derived:
                ops = ["add", "sub", "mul", "div"]
                rng.shuffle(ops)
                for op in ops:
                    args = self._args(op, x, rng)
                    if args is not None:
                        break
                else:
                    return None
                x = apply_op(op, args, x)
                parts.append(f"{op}:{args[0]}")
            else:
                x = rng.randint(1, self.max_operand)
                parts.append(f"given:{x}")
            total += x
        return parts if total <= self.max_value else None

    def sample_key(self, rng: random.Random) -> str:
        while True:
            tpl = rng.choice(TEMPLATES)
            steps = rng.randint(self.min_steps, self.max_steps)
            if tpl == "days":
                parts = self._sample_days(steps, rng)
            elif tpl == "groups":
                k, m = rng.randint(2, self.max_mul), rng.randint(2, self.max_pack)
                rest = self._chain(TEMPLATE_OPS[tpl], k * m, steps - 1, rng)
                parts = None if rest is None else [f"{k}:{m}", *rest]
            else:
                a = rng.randint(1, self.max_operand)
                rest = self._chain(TEMPLATE_OPS[tpl], a, steps, rng)
                parts = None if rest is None else [str(a), *rest]
            if parts is not None:
                return "|".join(["math", tpl, *parts])

    # ---- rendering ----------------------------------------------------------------------
    def render(self, key: str) -> Example:
        prompt, lines, answer = render_problem(key)
        target = "\n".join([*lines, f"#### {answer}"])
        return Example(self.name, self.make_id(key), prompt, target, str(answer))

    def render_varied(self, key: str, rng: random.Random) -> Example:
        """`render(key)` with a target worded in a style drawn from `rng` (``tasks/phrasing.py``): the
        same equations in paraphrased lines, independent steps in a free order, the same `#### answer`."""
        from unmask.tasks.phrasing import vary_math

        prompt, steps, answer = problem_steps(key)
        return Example(self.name, self.make_id(key), prompt, "\n".join(vary_math(steps, answer, rng)), str(answer))

    def score(self, example: Example, completion: str) -> float:
        return float(answers_match(extract_answer(completion), example.reference))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


@dataclass(frozen=True)
class Step:
    """One reasoning line: its canonical ``text`` plus what a paraphrase of it needs (``kind``, ``f``).

    Kinds: ``start`` (name, x, obj), ``product`` (eq, descs: noun phrases of the groups, obj), ``act``
    (subj, pron, pres/past/ing: the action in three forms, eq, op), ``compare`` (who, pron, prev, rel,
    short, eq, obj), ``day`` (day, value, obj, noun, verb, derived, and for a derived day eq, rel, prev),
    ``total`` (the canonical sum of the days: a varied rendering redoes the sums itself).
    """

    kind: str
    text: str
    f: dict = field(default_factory=dict)


# Verb phrases (third person) -> (past, -ing form), for the paraphrases of `Step`s.
VERB_FORMS = {
    "buys": ("bought", "buying"), "finds": ("found", "finding"), "gets": ("got", "getting"),
    "receives": ("received", "receiving"), "picks up": ("picked up", "picking up"), "wins": ("won", "winning"),
    "collects": ("collected", "collecting"), "makes": ("made", "making"), "gives away": ("gave away", "giving away"),
    "loses": ("lost", "losing"), "sells": ("sold", "selling"), "uses": ("used", "using"),
    "donates": ("donated", "donating"), "trades away": ("traded away", "trading away"),
    "breaks": ("broke", "breaking"), "earns": ("earned", "earning"), "is paid": ("was paid", "being paid"),
    "spends": ("spent", "spending"), "pays": ("paid", "paying"), "lends out": ("lent out", "lending out"),
    "adds": ("added", "adding"), "brings in": ("brought in", "bringing in"), "takes out": ("took out", "taking out"),
    "keeps": ("kept", "keeping"), "ends up with": ("ended up with", "ending up with"),
    "pays for": ("paid for", "paying for"),
}
# "groups": what happens to the objects (passive) -> what the place does (active verb phrase)
ARRIVE_ACTIVE = {"are added": "adds", "are brought in": "brings in", "are delivered": "gets", "arrive": "gets"}
LEAVE_ACTIVE = {"are sold": "sells", "are taken out": "takes out", "are given away": "gives away", "are used": "uses"}


def _act(subj: str, pron: str, verb: str, rest: str, eq: str, op: str, text: str) -> Step:
    """An ``act`` step: ``subj`` does ``verb rest`` (verb a key of VERB_FORMS) with equation ``eq``."""
    past, ing = VERB_FORMS[verb]
    return Step("act", text, dict(subj=subj, pron=pron, pres=f"{verb} {rest}".strip(), past=f"{past} {rest}".strip(),
                                  ing=f"{ing} {rest}".strip(), eq=eq, op=op))


def _product(what: str, a: int, m: int, q: int, descs: tuple[str, ...], obj: str) -> Step:
    """A ``product`` step: ``what`` (the groups) worked out as ``a * m = q``; ``descs``: noun phrases of them."""
    eq = f"{a} * {m} = {q}"
    return Step("product", f"{what}: {eq}.", dict(eq=eq, descs=descs, obj=obj))


def render_problem(key: str) -> tuple[str, list[str], int]:
    """(problem text, reasoning lines without the `####` line, answer) for a math key."""
    prompt, steps, answer = problem_steps(key)
    return prompt, [s.text for s in steps], answer


def problem_steps(key: str) -> tuple[str, list[Step], int]:
    """(problem text, reasoning steps, answer) for a math key: a pure function of the key."""
    _, tpl, start, *rest = key.split("|")
    rng = random.Random("render/" + key)
    if tpl == "days":
        return _render_days(start, rest, rng)
    if tpl == "compare":
        return _render_compare(start, rest, rng)
    ops = [parse_op(p) for p in rest]
    name, pron = rng.choice(NAMES)
    poss = "his" if pron == "he" else "her"
    obj, cont = rng.choice(OBJECTS), rng.choice(CONTAINERS)
    P = _cap(pron)
    if tpl == "groups":
        k, m = map(int, start.split(":"))
        x = k * m
        place = rng.choice(PLACES)
        sents = [f"A {place} has {k} {cont} with {m} {obj} in each."]
        descs = (f"{k} {cont} of {m}", f"{k} {cont} with {m} {obj} each", f"the {k} {cont}")
        steps = [_product(f"{k} {cont} of {m}", k, m, x, descs, obj)]
        question = f"How many {obj} does the {place} have now?"
        subj, spron = f"the {place}", "it"
    else:
        x = int(start)
        subj, spron = name, pron
        if tpl == "inv":
            verb = rng.choice(["has", "owns", "collected"])
            sents = [f"{name} {verb} {x} {obj}."]
            steps = [Step("start", f"{name} starts with {x} {obj}.", dict(name=name, x=x, obj=obj))]
            question = rng.choice([f"How many {obj} does {name} have now?",
                                   f"How many {obj} does {name} have at the end?"])
        else:
            obj = "dollars"
            sents = [rng.choice([f"{name} has {x} dollars.", f"{name} has saved {x} dollars."])]
            steps = [Step("start", f"{name} starts with {x} dollars.", dict(name=name, x=x, obj=obj))]
            question = rng.choice([f"How many dollars does {name} have now?",
                                   f"How much money, in dollars, does {name} have at the end?"])
    for op, args in ops:
        y = apply_op(op, args, x)
        c = rng.choice(CONNECT)
        a = args[0]
        if op in ("pack_add", "pack_sub"):
            q = a * args[1]
            sign, base = ("+", "add") if op == "pack_add" else ("-", "sub")
            eq2 = f"{x} {sign} {q} = {y}"
        else:
            sign = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
        eq = f"{x} {sign} {a} = {y}"
        if tpl == "groups":
            if op == "add":
                v = rng.choice(ARRIVE)
                sents.append(f"{c} {a} more {obj} {v}.")
                steps.append(_act(subj, spron, ARRIVE_ACTIVE[v], f"{a} more", eq, op, f"{a} more {v}: {eq}."))
            elif op == "sub":
                v = rng.choice(LEAVE)
                sents.append(f"{c} {a} {obj} {v}.")
                steps.append(_act(subj, spron, LEAVE_ACTIVE[v], f"{a}", eq, op, f"{a} {v}: {eq}."))
            elif op == "div":
                sents.append(f"{c} the {obj} are split into {a} equal piles and only one pile is kept.")
                steps.append(_act(subj, spron, "keeps", f"1 of {a} equal piles", eq, op,
                                  f"1 of {a} equal piles is kept: {eq}."))
            else:
                m = args[1]
                sents.append(f"{c} {a} more {cont} with {m} {obj} in each arrive.")
                descs = (f"{a} more {cont} of {m}", f"{a} more {cont} with {m} {obj} each", f"the {a} new {cont}")
                steps += [_product(f"{a} more {cont} of {m}", a, m, q, descs, obj),
                          _act(subj, spron, "adds", "them", eq2, base, f"They are added: {eq2}.")]
        elif tpl == "inv":
            if op == "add":
                v = rng.choice(ADD_VERBS)
                sents.append(f"{c} {pron} {v} {a} more {obj}.")
                steps.append(_act(subj, spron, v, f"{a} more", eq, op, f"{P} {v} {a} more: {eq}."))
            elif op == "sub":
                v = rng.choice(SUB_VERBS)
                sents.append(f"{c} {pron} {v} {a} {obj}.")
                steps.append(_act(subj, spron, v, f"{a}", eq, op, f"{P} {v} {a}: {eq}."))
            elif op == "mul":
                sents.append(f"{c} {pron} ends up with {a} times as many {obj} as before.")
                steps.append(_act(subj, spron, "ends up with", f"{a} times as many", eq, op,
                                  f"{P} has {a} times as many: {eq}."))
            elif op == "div":
                sents.append(f"{c} {pron} splits the {obj} into {a} equal groups and keeps one group.")
                steps.append(_act(subj, spron, "keeps", f"1 of {a} equal groups", eq, op,
                                  f"{P} keeps 1 of {a} equal groups: {eq}."))
            elif op == "pack_add":
                m = args[1]
                sents.append(f"{c} {pron} buys {a} {cont} with {m} {obj} in each.")
                descs = (f"{a} {cont} of {m}", f"{a} {cont} with {m} {obj} each", f"the {a} {cont}")
                steps += [_product(f"{a} {cont} of {m}", a, m, q, descs, obj),
                          _act(subj, spron, "adds", "them", eq2, base, f"{P} adds them: {eq2}.")]
            else:
                m = args[1]
                sents.append(f"{c} {pron} gives {a} friends {m} {obj} each.")
                descs = (f"{a} friends at {m} each", f"{m} {obj} for each of {a} friends", f"{a} gifts of {m}")
                steps += [_product(f"{a} friends get {m} each", a, m, q, descs, obj),
                          _act(subj, spron, "gives away", "them", eq2, base, f"{P} gives them away: {eq2}.")]
        else:  # money
            if op == "add":
                v = rng.choice(MONEY_ADD)
                sents.append(f"{c} {pron} {v} {a} dollars.")
                steps.append(_act(subj, spron, v, f"{a} dollars", eq, op, f"{P} {v} {a}: {eq}."))
            elif op == "sub":
                v = rng.choice(MONEY_SUB)
                sents.append(f"{c} {pron} {v} {a} dollars.")
                steps.append(_act(subj, spron, v, f"{a} dollars", eq, op, f"{P} {v} {a}: {eq}."))
            elif op == "mul":
                sents.append(f"{c} {poss} money grows to {a} times as much.")
                steps.append(_act(subj, spron, "ends up with", f"{a} times as much money", eq, op,
                                  f"{_cap(poss)} money grows {a} times: {eq}."))
            elif op == "div":
                sents.append(f"{c} {pron} splits the money into {a} equal parts and keeps one part.")
                steps.append(_act(subj, spron, "keeps", f"1 of {a} equal parts", eq, op,
                                  f"{P} keeps 1 of {a} equal parts: {eq}."))
            elif op == "pack_add":
                m = args[1]
                sents.append(f"{c} {pron} works {a} days and earns {m} dollars each day.")
                descs = (f"{a} days at {m} dollars", f"{m} dollars for each of {a} days", f"{a} days of work")
                steps += [_product(f"{a} days at {m} dollars", a, m, q, descs, "dollars"),
                          _act(subj, spron, "adds", "it", eq2, base, f"{P} adds it: {eq2}.")]
            else:
                m, item = args[1], rng.choice(ITEMS)
                sents.append(f"{c} {pron} buys {a} {item} that cost {m} dollars each.")
                descs = (f"{a} {item} at {m} dollars", f"{a} {item} at {m} dollars each", f"the {a} {item}")
                steps += [_product(f"{a} {item} at {m} dollars", a, m, q, descs, "dollars"),
                          _act(subj, spron, "pays for", "them", eq2, base, f"{P} pays it: {eq2}.")]
        x = y
    return " ".join([*sents, question]), steps, x


def _render_compare(start: str, rest: list[str], rng: random.Random) -> tuple[str, list[Step], int]:
    people = rng.sample(NAMES, len(rest) + 1)
    obj = rng.choice(OBJECTS)
    x = int(start)
    first = people[0][0]
    sents = [f"{first} has {x} {obj}."]
    steps = [Step("start", f"{first} has {x} {obj}.", dict(name=first, x=x, obj=obj))]
    for (who, pron), (prev, _), part in zip(people[1:], people, rest, strict=False):
        op, (a,) = parse_op(part)
        y = apply_op(op, (a,), x)
        short = {"add": f"{a} more", "sub": f"{a} fewer", "mul": f"{a} times as many",
                 "div": f"{FRACTIONS.get(a, '')} as many"}[op]
        rel = {"add": f"{a} more {obj} than", "sub": f"{a} fewer {obj} than", "mul": f"{a} times as many {obj} as",
               "div": f"{FRACTIONS.get(a, '')} as many {obj} as"}[op]
        sents.append(f"{who} has {rel} {prev}.")
        eq = f"{x} {dict(add='+', sub='-', mul='*', div='/')[op]} {a} = {y}"
        steps.append(Step("compare", f"{who} has {short}: {eq}.",
                          dict(who=who, pron=pron, prev=prev, rel=f"{rel} {prev}", short=short, eq=eq, obj=obj)))
        x = y
    sents.append(f"How many {obj} does {people[-1][0]} have?")
    return " ".join(sents), steps, x


def _render_days(start: str, rest: list[str], rng: random.Random) -> tuple[str, list[Step], int]:
    noun, verb, base, obj = rng.choice(DAY_SUBJECTS)
    n = len(rest) + 1
    d0 = rng.randint(0, 7 - n)
    days = DAYS[d0 : d0 + n]
    x = int(start)
    values = [x]
    common = dict(obj=obj, noun=noun, verb=verb)
    sents = [f"A {noun} {verb} {x} {obj} on {days[0]}."]
    steps = [Step("day", f"{days[0]}: {x} {obj}.", dict(day=days[0], value=x, derived=False, **common))]
    for i, part in enumerate(rest, start=1):
        op, (a,) = parse_op(part)
        day, prev = days[i], days[i - 1]
        if op == "given":
            y = a
            sents.append(f"On {day} the {noun} {verb} {a} {obj}.")
            steps.append(Step("day", f"{day}: {a} {obj}.", dict(day=day, value=y, derived=False, **common)))
        else:
            y = apply_op(op, (a,), x)
            rel = {"add": f"{a} more {obj} than", "sub": f"{a} fewer {obj} than",
                   "mul": f"{a} times as many {obj} as", "div": f"{FRACTIONS.get(a, '')} as many {obj} as"}[op]
            sign = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
            sents.append(f"On {day} the {noun} {verb} {rel} on {prev}.")
            eq = f"{x} {sign} {a} = {y}"
            steps.append(Step("day", f"{day}: {eq}.", dict(day=day, value=y, derived=True, eq=eq,
                                                          rel=f"{rel} on {prev}", prev=prev, **common)))
        values.append(y)
        x = y
    total = values[0]
    for i in range(1, n):
        new = total + values[i]
        label = f"{days[0]} and {days[1]}" if i == 1 else f"Adding {days[i]}"
        steps.append(Step("total", f"{label}: {total} + {values[i]} = {new}."))
        total = new
    sents.append(f"How many {obj} does the {noun} {base} over the {COUNT_WORDS[n]} days in total?")
    return " ".join(sents), steps, total
