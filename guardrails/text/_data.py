"""Unicode data behind the text guard, loaded once from maintained sources.

Nothing here is hand-typed Unicode data:

* the UTS #39 confusables mapping comes from the ``confusable-homoglyphs`` package, which
  ships Unicode's ``confusables.txt`` as JSON (each line ``source → prototype`` stored in
  both directions); :func:`skeleton_map` recovers the one-way ``source → prototype`` map;
* script properties (for mixed-script detection) come from the same package's copy of
  Unicode's ``Scripts.txt``;
* general categories and decompositions come from Python's :mod:`unicodedata`.

The only literal tables in this package are the conventional leetspeak digits and
symbols (:data:`guardrails.text.normalize.LEET`) and the list of URL shorteners, which
are not Unicode data.
"""

from __future__ import annotations

import bisect
import functools
import json
import unicodedata
from importlib import resources
from typing import Any

from ..exceptions import missing_extra

__all__ = ["skeleton_map", "script_of", "is_default_ignorable", "UNICODE_VERSION"]

UNICODE_VERSION = unicodedata.unidata_version

_LRM = "\u200e"  # the package wraps right-to-left characters in LRM marks for display


def _load_json(name: str) -> Any:
    try:
        import confusable_homoglyphs  # noqa: F401  (presence check; data read below)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise missing_extra("confusable_homoglyphs", "text", "The text guard") from exc
    return json.loads(resources.files("confusable_homoglyphs").joinpath(name).read_text("utf-8"))


@functools.cache
def skeleton_map() -> dict[str, str]:
    """Return the UTS #39 ``source → prototype`` map, one code point to a string.

    Returns
    -------
    dict of str to str
        Keys are single code points; values are their prototypes (one or more code
        points). Prototypes are never keys, so applying the map once reaches the fixed
        point (the skeleton is idempotent).

    Notes
    -----
    ``confusables.json`` stores every line of ``confusables.txt`` twice, as
    ``source: [prototype]`` and ``prototype: [..., source]``, in file order. A code point
    that is a source appears on exactly one line as a source and never as a prototype,
    so a key with one entry whose partner has several entries (or is longer than one
    code point) is a source. For pairs that only name each other, the source is the key
    that was inserted first, because the generator inserts the source of a line before
    its prototype.
    """
    raw = _load_json("confusables.json")
    data: dict[str, list[str]] = {}
    for key, entries in raw.items():
        data.setdefault(key.replace(_LRM, ""), []).extend(e["c"].replace(_LRM, "") for e in entries)
    order = {key: i for i, key in enumerate(data)}
    result: dict[str, str] = {}
    for key, entries in data.items():
        if len(key) != 1 or len(entries) != 1:
            continue
        target = entries[0]
        back = data.get(target, [])
        if len(target) > 1 or len(back) > 1:
            result[key] = target
        elif back == [key] and order[key] < order[target]:
            result[key] = target
    # Idempotence is what makes the skeleton a key; check it rather than trust it.
    for source, target in result.items():
        if any(ch in result for ch in target):
            raise RuntimeError(  # pragma: no cover - only a broken data file gets here
                f"confusables data is not idempotent at {source!r} -> {target!r}"
            )
    return result


@functools.cache
def _scripts() -> tuple[list[int], list[int], list[str]]:
    raw = _load_json("categories.json")
    aliases = raw["iso_15924_aliases"]
    ranges = sorted(raw["code_points_ranges"])
    starts = [r[0] for r in ranges]
    ends = [r[1] for r in ranges]
    names = [aliases[r[2]] for r in ranges]
    return starts, ends, names


@functools.lru_cache(maxsize=65536)
def script_of(ch: str) -> str:
    """Return the Unicode script of one code point (``'LATIN'``, ``'CYRILLIC'``, ...).

    Unassigned code points return ``'UNKNOWN'``.
    """
    starts, ends, names = _scripts()
    cp = ord(ch)
    i = bisect.bisect_right(starts, cp) - 1
    if i >= 0 and cp <= ends[i]:
        return names[i]
    return "UNKNOWN"


# Default_Ignorable_Code_Point (DerivedCoreProperties.txt) is defined as
#   Other_Default_Ignorable_Code_Point + Cf + Variation_Selector
#   - White_Space - FFF9..FFFB - 13430..1343F - Prepended_Concatenation_Mark.
# unicodedata exposes Cf; the two other sets are small code point ranges named in the
# UCD (PropList.txt), given here as ranges rather than characters. Removing the
# subtracted Cf characters as well is harmless for matching keys, so all Cf go.
_VARIATION_SELECTORS = ((0x180B, 0x180D), (0x180F, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
_OTHER_DEFAULT_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0FFF),
)


def is_default_ignorable(ch: str) -> bool:
    """Whether ``ch`` is a default-ignorable code point (or any other format character)."""
    if unicodedata.category(ch) == "Cf":
        return True
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _VARIATION_SELECTORS + _OTHER_DEFAULT_IGNORABLE)
