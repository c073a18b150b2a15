"""One exception type for user-facing input problems.

The CLI turns a PitaInputError into a single line on stderr and exit status 2, so every
message must name the file or config field and the problem.
"""
import math


class PitaInputError(ValueError):
    """Bad user input: a file, config field or sample set that cannot be used."""


def brief(value: object, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters, for one-line messages (a huge integer, or a long
    string, would otherwise fill the line; Python refuses to print ints of over 4300 digits)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # int beyond sys.get_int_max_str_digits, deep nesting
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def finite_number(value: object) -> bool:
    """A real number (not a bool) that is finite as a float: a huge int is not (float() overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def clip(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters (a path or name as written, without quotes)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def name_list(value: object) -> bool:
    """A non-empty list of non-empty strings (e.g. force-field file names)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)
