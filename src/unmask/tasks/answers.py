"""Answer extraction and normalisation for real math benchmarks (GSM8K, MATH).

`strip_string` follows Hendrycks et al.'s MATH `math_equivalence.py` (with the units assert made
safe), plus removal of a trailing `.0`/`.00` on plain numbers, `\\text{...}` unwrapping of
whole answers and `\\mbox`/`\\displaystyle` removal.
"""

from __future__ import annotations

import re

NUMBER_RE = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (brace-matched), or of `\\boxed x`."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    rest = text[idx:]
    head = "\\boxed" if rest.startswith("\\boxed") else "\\fbox"
    rest = rest[len(head):]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):  # "\boxed 5"
        return rest.strip().split("$")[0].strip() or None
    rest = rest.lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None  # unbalanced


def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[:1] == "{":
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b = substr[0], substr[1]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + substr[2:]
        else:
            new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(string: str) -> str:
    # "\text{ " only occurs (in MATH) when describing units on the right
    return string.split("\\text{ ")[0] if "\\text{ " in string else string


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new = splits[0]
    for split in splits[1:]:
        if split[:1] and split[0] != "{":
            new += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new += "\\sqrt" + split
    return new


def strip_string(string: str) -> str:
    """Normalise a MATH answer string for exact-match comparison."""
    string = str(string).strip()
    string = string.replace("\n", "").replace("\\!", "")
    string = string.replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "").replace("$", "")
    string = string.replace("\\displaystyle", "").replace("\\mbox", "\\text")
    string = _remove_right_units(string)
    string = re.sub(r"^\\text\{(.*)\}$", r"\1", string.strip())  # whole answer wrapped in \text{}
    string = string.replace("\\%", "").replace("%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    parts = string.split("=")
    if len(parts) == 2 and len(parts[0]) <= 2:  # "k = 5" -> "5"
        string = parts[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    string = _fix_a_slash_b(string)
    string = re.sub(r"^(-?\d+)\.0+$", r"\1", string)  # "12.0" -> "12"
    return string


def math_equal(pred: str | None, gold: str) -> bool:
    """MATH equivalence: normalised strings equal, or equal as plain numbers."""
    if pred is None:
        return False
    a, b = strip_string(pred), strip_string(gold)
    if a == b:
        return True
    try:
        return abs(float(a.replace(",", "")) - float(b.replace(",", ""))) < 1e-9
    except ValueError:
        return False


def gsm8k_gold(answer: str) -> str:
    """Gold number of a GSM8K answer: the text after the last '####', commas removed."""
    if "####" not in answer:
        raise ValueError(f"GSM8K answer has no '####': {answer[-80:]!r}")
    return answer.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "").rstrip(".")


def extract_number(text: str) -> str | None:
    """Predicted number: after the last '####', else in the last \\boxed{}, else the last number."""
    if "####" in text:
        m = NUMBER_RE.search(text.rsplit("####", 1)[1])
        if m:
            return _clean_number(m.group())
    boxed = last_boxed(text)
    if boxed is not None:
        m = NUMBER_RE.search(boxed)
        if m:
            return _clean_number(m.group())
    found = NUMBER_RE.findall(text)
    return _clean_number(found[-1]) if found else None


def _clean_number(s: str) -> str:
    return s.replace(",", "").replace("$", "").rstrip(".")


def numbers_equal(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    try:
        return abs(float(pred) - float(gold)) < 1e-6
    except ValueError:
        return False
