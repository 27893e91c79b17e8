"""Reading untrusted input: JSON bodies, strings, money. Every rule here is written once."""

import json
import re

from .errors import INVALID, ApiError, invalid
from .ids import is_id

MAX_BODY = 64 * 1024
# Ping++'s events: a charge with many refunds is large, and a 413 would be delivered again forever.
MAX_WEBHOOK_BODY = 1024 * 1024
_DIGITS = re.compile(r"0*[0-9]{1,15}")  # leading zeros do not count toward the length


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw):
    """bytes -> dict, or 904 for anything that is not a UTF-8 JSON object."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        if b"\\u" in raw:
            # A lone surrogate escape ("\ud800") is valid JSON but not Unicode text: it would fail
            # later, in a hash or the database, as a 500.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        raise invalid("请求体不是合法的 JSON") from None
    if not isinstance(value, dict):
        raise invalid("请求体必须是 JSON 对象")
    return value


def read_body(stream, content_length, limit=MAX_BODY):
    """Read at most limit bytes; a larger body is 413 whatever Content-Length claims."""
    if content_length is not None and content_length > limit:
        raise ApiError(INVALID, "请求体过大", 413)
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(INVALID, "请求体过大", 413)
    return raw



def text(body, name, *, required=True, min_len=1, max_len=64, strip=True, default=None):
    """A string field, trimmed, with its length checked in characters."""
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"缺少参数 {name}")
        return default
    if not isinstance(value, str):
        raise invalid(f"参数 {name} 必须是字符串")
    if strip:
        value = value.strip()
    if not min_len <= len(value) <= max_len:
        raise invalid(f"参数 {name} 长度应为 {min_len}-{max_len}")
    return value


def choice(body, name, choices, default=None):
    value = body.get(name)
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise invalid(f"参数 {name} 取值无效")
    return value


def object_id(body, name, *, required=True):
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise invalid(f"缺少参数 {name}")
        return ""
    if not is_id(value):
        raise invalid(f"参数 {name} 格式错误")
    return value


def whole_number(value, name, minimum, maximum, unit=""):
    """A JSON integer or a string of decimal digits, within [minimum, maximum].

    Floats, signs, spaces, exponents, empty strings and booleans are refused: "10.5" or 1e3 are
    never silently rounded into someone's money.
    """
    if isinstance(value, bool):
        raise invalid(f"参数 {name} 必须是整数{unit}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value.lstrip("0") or "0")
    else:
        raise invalid(f"参数 {name} 必须是整数{unit}")
    if not minimum <= number <= maximum:
        raise invalid(f"参数 {name} 超出范围 {minimum}-{maximum}")
    return number


def fen(value, name, minimum, maximum):
    """Money: an integer number of fen (分), as whole_number."""
    return whole_number(value, name, minimum, maximum, unit="（分）")
