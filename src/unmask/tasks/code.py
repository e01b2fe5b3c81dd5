"""Small function-writing tasks checked by executing assert-based tests ("code").

A family is a templated function (e.g. "add k", "count items greater than k", "repeat a
string k times"); an example's canonical key is family + constants + function name + argument
name, e.g. `code|add_k|7|plus_7|x`. The target is a short `def` (1-4 body lines, 4-space
indents), the reference is three `assert` lines computed from a Python reference
implementation. Scoring: extract the code (inside ``` fences if any, from the first `def` to the
end of that function) and run it with the tests in the sandbox.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unmask.tasks.base import Example, GeneratedTask
from unmask.tasks.sandbox import run_python

NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
             "twelve"]
INT_ARGS = ["x", "n", "num", "value", "a", "m", "y", "number"]
LIST_ARGS = ["nums", "numbers", "values", "items", "xs", "arr", "lst", "data"]
STR_ARGS = ["s", "text", "word", "name", "line", "msg"]
WORDS = ["apple", "banana", "cherry", "dog", "elephant", "fish", "grape", "house", "island", "jungle",
         "kite", "lemon", "mango", "night", "ocean", "pizza", "queen", "river", "sun", "tiger", "hello",
         "world", "code", "data", "level", "moon", "star", "tree", "book", "cat"]
LETTERS = "abcdeilmnorst"
END_RE = re.compile(r"<\|(?:endoftext|eot_id|im_end)\|>")


@dataclass(frozen=True)
class Family:
    kind: str  # "int" | "list" | "str"
    names: tuple[str, ...]  # function-name templates, formatted with {k} / {w} (number word) / {c}
    desc: str  # description, formatted with {a} (argument) and constants
    body: str  # function body (without the def line), formatted with {a} and constants
    fn: Callable[..., Any]  # reference implementation fn(arg, k) or fn(arg, c)
    consts: str = ""  # "k" | "c" | ""  (what the constant is)
    lo: int = 2
    hi: int = 12


def _count_greater(xs: list[int], k: int) -> int:
    return sum(1 for v in xs if v > k)


FAMILIES: dict[str, Family] = {
    # ---- one integer argument
    "add_k": Family("int", ("add_{w}", "plus_{w}", "add_{k}", "increase_by_{k}"), "returns {a} plus {k}",
                    "return {a} + {k}", lambda x, k: x + k, "k", 1, 99),
    "sub_k": Family("int", ("subtract_{w}", "minus_{w}", "minus_{k}", "decrease_by_{k}"),
                    "returns {a} minus {k}", "return {a} - {k}", lambda x, k: x - k, "k", 1, 99),
    "mul_k": Family("int", ("times_{w}", "multiply_by_{k}", "times_{k}", "scale_by_{w}"),
                    "returns {a} multiplied by {k}", "return {a} * {k}", lambda x, k: x * k, "k", 2, 12),
    "floordiv_k": Family("int", ("div_by_{k}", "divide_by_{w}", "floor_div_{k}"),
                         "returns {a} divided by {k}, rounded down (integer division)", "return {a} // {k}",
                         lambda x, k: x // k, "k", 2, 12),
    "mod_k": Family("int", ("is_divisible_by_{k}", "divisible_by_{w}", "is_multiple_of_{k}"),
                    "returns True if {a} is divisible by {k} and False otherwise", "return {a} % {k} == 0",
                    lambda x, k: x % k == 0, "k", 2, 12),
    "square_plus_k": Family("int", ("square_plus_{k}", "square_add_{w}"), "returns the square of {a} plus {k}",
                            "return {a} * {a} + {k}", lambda x, k: x * x + k, "k", 1, 30),
    "max_k": Family("int", ("at_least_{k}", "max_with_{k}", "no_less_than_{w}"),
                    "returns the larger of {a} and {k}", "return max({a}, {k})", lambda x, k: max(x, k), "k", 0, 50),
    "absdiff_k": Family("int", ("distance_to_{k}", "abs_diff_{k}", "gap_from_{w}"),
                        "returns the absolute difference between {a} and {k}", "return abs({a} - {k})",
                        lambda x, k: abs(x - k), "k", 0, 50),
    "double_plus_k": Family("int", ("double_plus_{k}", "twice_plus_{w}"), "returns twice {a} plus {k}",
                            "doubled = {a} * 2\n    return doubled + {k}", lambda x, k: 2 * x + k, "k", 1, 30),
    # ---- one list argument
    "sum": Family("list", ("total", "sum_list", "list_sum", "add_all"), "returns the sum of the numbers in {a}",
                  "return sum({a})", lambda xs, k: sum(xs)),
    "max": Family("list", ("largest", "max_value", "biggest", "find_max"),
                  "returns the largest number in the non-empty list {a}", "return max({a})", lambda xs, k: max(xs)),
    "min": Family("list", ("smallest", "min_value", "find_min", "lowest"),
                  "returns the smallest number in the non-empty list {a}", "return min({a})",
                  lambda xs, k: min(xs)),
    "len": Family("list", ("count_items", "list_length", "size_of"), "returns how many items are in {a}",
                  "return len({a})", lambda xs, k: len(xs)),
    "count_gt_k": Family("list", ("count_above_{k}", "count_greater_than_{w}", "how_many_over_{k}"),
                         "returns how many numbers in {a} are greater than {k}",
                         "return len([v for v in {a} if v > {k}])", _count_greater, "k", 0, 15),
    "count_k": Family("list", ("count_{w}s", "count_value_{k}", "occurrences_of_{k}"),
                      "returns how many times {k} appears in {a}", "return {a}.count({k})",
                      lambda xs, k: xs.count(k), "k", 0, 9),
    "filter_even": Family("list", ("evens", "keep_even", "filter_evens", "even_numbers"),
                          "returns a list of the even numbers in {a}, in order",
                          "return [v for v in {a} if v % 2 == 0]", lambda xs, k: [v for v in xs if v % 2 == 0]),
    "filter_odd": Family("list", ("odds", "keep_odd", "filter_odds", "odd_numbers"),
                         "returns a list of the odd numbers in {a}, in order",
                         "return [v for v in {a} if v % 2 == 1]", lambda xs, k: [v for v in xs if v % 2 == 1]),
    "filter_gt_k": Family("list", ("above_{k}", "greater_than_{w}", "keep_over_{k}"),
                          "returns a list of the numbers in {a} that are greater than {k}, in order",
                          "return [v for v in {a} if v > {k}]", lambda xs, k: [v for v in xs if v > k], "k", 0, 15),
    "reverse_list": Family("list", ("reverse_list", "reversed_items", "backwards"),
                           "returns the list {a} in reverse order", "return {a}[::-1]", lambda xs, k: xs[::-1]),
    "scale_each": Family("list", ("times_{w}_each", "scale_all_by_{k}", "multiply_each_by_{k}"),
                         "returns a new list with each number in {a} multiplied by {k}",
                         "return [v * {k} for v in {a}]", lambda xs, k: [v * k for v in xs], "k", 2, 12),
    "add_each": Family("list", ("add_{w}_each", "shift_all_by_{k}", "add_{k}_to_all"),
                       "returns a new list with {k} added to each number in {a}",
                       "return [v + {k} for v in {a}]", lambda xs, k: [v + k for v in xs], "k", 1, 20),
    "sum_gt_k": Family("list", ("sum_above_{k}", "total_over_{w}"),
                       "returns the sum of the numbers in {a} that are greater than {k}",
                       "return sum(v for v in {a} if v > {k})", lambda xs, k: sum(v for v in xs if v > k), "k", 0, 15),
    "sum_squares": Family("list", ("sum_of_squares", "square_sum", "total_squares"),
                          "returns the sum of the squares of the numbers in {a}",
                          "total = 0\n    for v in {a}:\n        total += v * v\n    return total",
                          lambda xs, k: sum(v * v for v in xs)),
    "product": Family("list", ("product", "multiply_all", "list_product"),
                      "returns the product of the numbers in {a}",
                      "result = 1\n    for v in {a}:\n        result *= v\n    return result",
                      lambda xs, k: math.prod(xs)),
    # ---- one string argument
    "reverse_str": Family("str", ("reverse_string", "reverse_text", "backwards_word", "flip"),
                          "returns the string {a} reversed", "return {a}[::-1]", lambda s, c: s[::-1]),
    "upper": Family("str", ("to_upper", "shout", "make_upper", "uppercase"),
                    "returns the string {a} in upper case", "return {a}.upper()", lambda s, c: s.upper()),
    "count_char": Family("str", ("count_{c}", "count_letter_{c}", "num_{c}s"),
                         "returns how many times the letter '{c}' appears in {a}", "return {a}.count('{c}')",
                         lambda s, c: s.count(c), "c"),
    "repeat_k": Family("str", ("repeat_{w}", "repeat_{k}_times", "copy_{k}"),
                       "returns the string {a} repeated {k} times", "return {a} * {k}", lambda s, k: s * k, "k", 2, 5),
    "first_k": Family("str", ("first_{w}", "prefix_{k}", "head_{k}"),
                      "returns the first {k} characters of {a}", "return {a}[:{k}]", lambda s, k: s[:k], "k", 1, 6),
    "len_plus_k": Family("str", ("length_plus_{k}", "size_plus_{w}"), "returns the length of {a} plus {k}",
                         "return len({a}) + {k}", lambda s, k: len(s) + k, "k", 1, 20),
    "add_suffix": Family("str", ("add_suffix_{c}", "append_{c}", "end_with_{c}"),
                         "returns {a} with the letter '{c}' added at the end", "return {a} + '{c}'",
                         lambda s, c: s + c, "c"),
    "replace_char": Family("str", ("replace_{c}_with_x", "swap_{c}_for_x"),
                           "returns {a} with every letter '{c}' replaced by 'x'", "return {a}.replace('{c}', 'x')",
                           lambda s, c: s.replace(c, "x"), "c"),
}
# Other correct bodies per family for the varied SFT targets (`CodeTask.render_varied`): formatted with {a}
# (argument), {k}/{c} (constant), {v} (loop variable), {t} (accumulator); the canonical body is one more choice.
STYLES: dict[str, tuple[str, ...]] = {
    "add_k": ("return {k} + {a}", "{t} = {a} + {k}\n    return {t}"),
    "sub_k": ("{t} = {a} - {k}\n    return {t}", "{a} -= {k}\n    return {a}"),
    "mul_k": ("return {k} * {a}", "{t} = {a} * {k}\n    return {t}"),
    "floordiv_k": ("{t} = {a} // {k}\n    return {t}", "return ({a} - {a} % {k}) // {k}"),
    "mod_k": ("return ({a} % {k}) == 0", "if {a} % {k} == 0:\n        return True\n    return False",
              "return not {a} % {k}"),
    "square_plus_k": ("return {a} ** 2 + {k}", "{t} = {a} * {a}\n    return {t} + {k}", "return {k} + {a} * {a}"),
    "max_k": ("return {a} if {a} > {k} else {k}", "if {a} > {k}:\n        return {a}\n    return {k}",
              "return max({k}, {a})"),
    "absdiff_k": ("return abs({k} - {a})", "{t} = {a} - {k}\n    return {t} if {t} >= 0 else -{t}",
                  "if {a} > {k}:\n        return {a} - {k}\n    return {k} - {a}"),
    "double_plus_k": ("return 2 * {a} + {k}", "return {a} * 2 + {k}", "return {a} + {a} + {k}"),
    "sum": ("{t} = 0\n    for {v} in {a}:\n        {t} += {v}\n    return {t}",),
    "max": ("{t} = {a}[0]\n    for {v} in {a}:\n        if {v} > {t}:\n            {t} = {v}\n    return {t}",
            "return sorted({a})[-1]"),
    "min": ("{t} = {a}[0]\n    for {v} in {a}:\n        if {v} < {t}:\n            {t} = {v}\n    return {t}",
            "return sorted({a})[0]"),
    "len": ("{t} = 0\n    for _ in {a}:\n        {t} += 1\n    return {t}", "return sum(1 for _ in {a})"),
    "count_gt_k": ("return sum(1 for {v} in {a} if {v} > {k})",
                   "{t} = 0\n    for {v} in {a}:\n        if {v} > {k}:\n            {t} += 1\n    return {t}"),
    "count_k": ("return sum(1 for {v} in {a} if {v} == {k})", "return len([{v} for {v} in {a} if {v} == {k}])",
                "{t} = 0\n    for {v} in {a}:\n        if {v} == {k}:\n            {t} += 1\n    return {t}"),
    "filter_even": ("return [{v} for {v} in {a} if {v} % 2 == 0]",
                    "{t} = []\n    for {v} in {a}:\n        if {v} % 2 == 0:\n            {t}.append({v})\n"
                    "    return {t}", "return list(filter(lambda {v}: {v} % 2 == 0, {a}))"),
    "filter_odd": ("return [{v} for {v} in {a} if {v} % 2 != 0]",
                   "{t} = []\n    for {v} in {a}:\n        if {v} % 2 == 1:\n            {t}.append({v})\n"
                   "    return {t}", "return list(filter(lambda {v}: {v} % 2 == 1, {a}))"),
    "filter_gt_k": ("return [{v} for {v} in {a} if {v} > {k}]",
                    "{t} = []\n    for {v} in {a}:\n        if {v} > {k}:\n            {t}.append({v})\n"
                    "    return {t}", "return list(filter(lambda {v}: {v} > {k}, {a}))"),
    "reverse_list": ("return list(reversed({a}))",
                     "{t} = []\n    for {v} in {a}:\n        {t}.insert(0, {v})\n    return {t}"),
    "scale_each": ("return [{v} * {k} for {v} in {a}]",
                   "{t} = []\n    for {v} in {a}:\n        {t}.append({v} * {k})\n    return {t}",
                   "return list(map(lambda {v}: {v} * {k}, {a}))"),
    "add_each": ("return [{v} + {k} for {v} in {a}]",
                 "{t} = []\n    for {v} in {a}:\n        {t}.append({v} + {k})\n    return {t}",
                 "return list(map(lambda {v}: {v} + {k}, {a}))"),
    "sum_gt_k": ("return sum([{v} for {v} in {a} if {v} > {k}])",
                 "{t} = 0\n    for {v} in {a}:\n        if {v} > {k}:\n            {t} += {v}\n    return {t}"),
    "sum_squares": ("return sum({v} * {v} for {v} in {a})", "return sum({v} ** 2 for {v} in {a})",
                    "{t} = 0\n    for {v} in {a}:\n        {t} += {v} ** 2\n    return {t}"),
    "product": ("{t} = 1\n    for {v} in {a}:\n        {t} = {t} * {v}\n    return {t}",
                "{t} = 1\n    for {v} in {a}:\n        {t} *= {v}\n    return {t}"),
    "reverse_str": ("return ''.join(reversed({a}))",
                    "{t} = ''\n    for ch in {a}:\n        {t} = ch + {t}\n    return {t}"),
    "upper": ("return ''.join(ch.upper() for ch in {a})", "{t} = {a}.upper()\n    return {t}"),
    "count_char": ("return sum(1 for ch in {a} if ch == '{c}')",
                   "{t} = 0\n    for ch in {a}:\n        if ch == '{c}':\n            {t} += 1\n    return {t}"),
    "repeat_k": ("return ''.join([{a}] * {k})",
                 "{t} = ''\n    for _ in range({k}):\n        {t} += {a}\n    return {t}"),
    "first_k": ("return {a}[0:{k}]", "{t} = {a}[:{k}]\n    return {t}"),
    "len_plus_k": ("{t} = len({a})\n    return {t} + {k}", "return {k} + len({a})"),
    "add_suffix": ("{t} = {a} + '{c}'\n    return {t}", "return ''.join([{a}, '{c}'])"),
    "replace_char": ("return ''.join('x' if ch == '{c}' else ch for ch in {a})",
                     "{t} = ''\n    for ch in {a}:\n        {t} += 'x' if ch == '{c}' else ch\n    return {t}"),
}
LOOP_VARS = ["v", "x", "n", "item", "num", "value", "el", "i"]
ACC_VARS = {"int": ["result", "out", "res", "answer", "r"], "list": ["total", "result", "out", "acc", "res", "count"],
            "str": ["result", "out", "res", "new", "text_out"]}
PROMPTS = [
    "Write a Python function `{name}({a})` that {desc}.",
    "Implement `{name}({a})` in Python: it {desc}.",
    "Define a Python function `{name}({a})` which {desc}.",
    "Create a function named `{name}` with one argument `{a}` that {desc}.",
]


def _inputs(fam: Family, rng: random.Random, const: Any) -> list[Any]:
    if fam.kind == "int":
        return [rng.randint(-20, 60) for _ in range(3)]
    if fam.kind == "list":
        out = []
        for _ in range(3):
            xs = [rng.randint(0, 20) for _ in range(rng.randint(1, 6))]
            if isinstance(const, int) and rng.random() < 0.5:  # make the constant matter
                xs[rng.randrange(len(xs))] = const + rng.choice([-1, 0, 1])
            out.append(xs)
        return out
    words = rng.sample(WORDS, 3)
    if isinstance(const, str):
        words[0] = words[0] + const
    return words


def _cap_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def extract_code(text: str) -> str:
    """Code from a completion: cut at the first end-of-text/end-of-turn token, then the first ```
    fenced block if any, from its first import/def/class line."""
    text = END_RE.split(text, maxsplit=1)[0]
    fence = re.search(r"```[ \t]*[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", text, re.DOTALL)
    if fence:
        text = fence.group(1)
    m = re.search(r"^(?:def |class |import |from \S+ import|@)", text, re.MULTILINE)
    return text[m.start():] if m else text


def first_function(text: str) -> str:
    """From the first `def` up to the first following non-indented line."""
    code = extract_code(text)
    m = re.search(r"^def ", code, re.MULTILINE)
    if not m:
        return code
    lines = code[m.start():].split("\n")
    end = next((i for i, ln in enumerate(lines[1:], 1) if ln.strip() and not ln[0].isspace()), len(lines))
    return "\n".join(lines[:end]).rstrip() + "\n"


class CodeTask(GeneratedTask):
    """Templated function-writing tasks over the families in `FAMILIES`."""

    name = "code"

    def __init__(self, families: tuple[str, ...] | None = None, timeout_s: float = 5.0):
        self.families = tuple(families or FAMILIES)
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown code families {unknown}; allowed: {', '.join(FAMILIES)}")
        self.timeout_s = timeout_s

    def sample_key(self, rng: random.Random) -> str:
        fam_name = rng.choice(self.families)
        fam = FAMILIES[fam_name]
        const: str = ""
        if fam.consts == "k":
            const = str(rng.randint(fam.lo, fam.hi))
        elif fam.consts == "c":
            const = rng.choice(LETTERS)
        names = fam.names
        if fam.consts == "k" and int(const) >= len(NUM_WORDS):
            names = tuple(n for n in names if "{w}" not in n) or names
        name = rng.choice(names)
        arg = rng.choice({"int": INT_ARGS, "list": LIST_ARGS, "str": STR_ARGS}[fam.kind])
        return f"code|{fam_name}|{const}|{name}|{arg}"

    def render(self, key: str) -> Example:
        _, fam_name, const, name_tpl, arg = key.split("|")
        fam = FAMILIES[fam_name]
        k: Any = int(const) if fam.consts == "k" else const
        fmt = {"a": arg, "k": const, "c": const, "w": NUM_WORDS[k] if isinstance(k, int) and k < 13 else const}
        fname = name_tpl.format(**fmt)
        rng = random.Random("render/" + key)
        desc = fam.desc.format(**fmt)
        prompt = rng.choice(PROMPTS).format(name=fname, a=arg, desc=desc)
        target = f"def {fname}({arg}):\n    " + fam.body.format(**fmt)
        tests = [f"assert {fname}({x!r}) == {fam.fn(x, k)!r}" for x in _inputs(fam, rng, k)]
        return Example(self.name, self.make_id(key), prompt, target, "\n".join(tests))

    def render_varied(self, key: str, rng: random.Random, *, style: int | None = None) -> Example:
        """`render(key)` with the body in a style drawn from `rng` (`STYLES`: loop, comprehension or builtin,
        other local names, an optional docstring or comment); every style passes the example's tests.
        ``style``: force body number ``style`` of ``(canonical body, *STYLES[family])`` (for tests)."""
        ex = self.render(key)
        _, fam_name, const, name_tpl, arg = key.split("|")
        fam = FAMILIES[fam_name]
        bodies = (fam.body, *STYLES.get(fam_name, ()))
        body = rng.choice(bodies) if style is None else bodies[style]
        v = rng.choice([n for n in LOOP_VARS if n != arg])
        t = rng.choice([n for n in ACC_VARS[fam.kind] if n != arg])
        if body == fam.body and "{v}" not in body:  # the canonical body names its loop variable `v`
            body = re.sub(r"\bv\b", "{v}", body)
        text = body.format(a=arg, k=const, c=const, v=v, t=t)
        header, _, _ = ex.target.partition("\n")
        k = int(const) if fam.consts == "k" else const
        doc = _cap_first(fam.desc.format(a=arg, k=const, c=const, w=NUM_WORDS[k] if isinstance(k, int) and k < 13
                                         else const))
        lines = [header]
        pick = rng.random()
        if pick < 0.25:
            lines.append(f'    """{doc}."""')
        elif pick < 0.4:
            lines.append(f"    # {doc}")
        lines.append("    " + text)
        return Example(ex.task, ex.id, ex.prompt, "\n".join(lines), ex.reference)

    def score(self, example: Example, completion: str) -> float:
        code = first_function(completion)
        return float(run_python(code + "\n" + example.reference, timeout_s=self.timeout_s).passed)
