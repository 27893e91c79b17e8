"""The project's text and money rules as regular expressions, for JSON Schema (the OpenAPI document
and shapes' schema_hook): decimal digits within bounds, a length after trimming.
"""

import re


def _group(pattern: str) -> str:
    atomic = len(pattern) == 1 or re.fullmatch(r"\[[^\]]*\]", pattern)
    return pattern if atomic else f"(?:{pattern})"


def _same_length(low: str, high: str) -> str:
    """A regex for the decimal strings of len(low) digits between low and high (both strings)."""
    if low == high:
        return low
    if len(low) == 1:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return low[0] + _group(_same_length(low[1:], high[1:]))
    rest = len(low) - 1
    parts, first, last = [], int(low[0]), int(high[0])
    if low[1:] != "0" * rest:
        parts.append(low[0] + _group(_same_length(low[1:], "9" * rest)))
        first += 1
    tail = None
    if high[1:] != "9" * rest:
        tail = high[0] + _group(_same_length("0" * rest, high[1:]))
        last -= 1
    if first <= last:
        parts.append(f"[{first}-{last}][0-9]{{{rest}}}")
    if tail:
        parts.append(tail)
    return "|".join(parts)


def digits_between(low: int, high: int) -> str:
    """A regex for a string of decimal digits (leading zeros allowed) whose value is in [low, high]."""
    alternatives = []
    for n in range(len(str(low)), len(str(high)) + 1):
        a, b = max(low, 10 ** (n - 1) if n > 1 else 0), min(high, 10**n - 1)
        if a <= b:
            alternatives.append(_same_length(str(a), str(b)))
    return "^0*(?:" + "|".join(alternatives) + ")$"


# What str.strip() removes (Python's str.isspace), as a regex class body: \s differs (\x1c-\x1f, \ufeff).
SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"


def trimmed_length(min_len: int, max_len: int) -> str:
    """A regex for strings whose length after str.strip() is within [min_len, max_len] (min_len 0 or 1)."""
    space, visible = f"[{SPACE}]", f"[^{SPACE}]"
    core = visible if max_len == 1 else f"{visible}(?:[\\s\\S]{{0,{max_len - 2}}}{visible})?"
    if min_len == 0:
        core = f"(?:{core})?"
    return f"^{space}*{core}{space}*$"
