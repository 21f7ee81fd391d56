"""One way to say a name is unknown: the closest valid names first, then every valid name once.

Used by every lookup a user types a name into (tasks, orders and settings, methods, presets, trackers), so a
typo or a near miss (``cifar10`` for the task ``cil-cifar10``) gets the same answer everywhere.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


def closest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` valid names closest to ``name``: first those holding it as a whole part (``cifar10`` ->
    ``cil-cifar10``, ``seq-cifar10``), then difflib's nearest spellings (``cifar10`` -> ``cifar100``)."""
    unique = list(dict.fromkeys(valid))
    key = name.strip().lower()
    parts = [v for v in unique if key and key in re.split(r"[-/_:]", v.lower()) and v.lower() != key]
    spelled = difflib.get_close_matches(key, [v.lower() for v in unique], n=n, cutoff=0.6)
    by_lower = {v.lower(): v for v in unique}
    return list(dict.fromkeys([*parts, *(by_lower[s] for s in spelled)]))[:n]


def unknown_name(kind: str, name: str, valid: Iterable[str], more: str = "") -> str:
    """``unknown task 'cifar10' (did you mean cil-cifar10 or cifar100?); valid tasks: a, b, ...`` (each name once);
    ``more`` follows the list (other forms a name may take)."""
    unique = list(dict.fromkeys(valid))
    near = closest(name, unique)
    guess = f" (did you mean {_either(near)}?)" if near else ""
    return f"unknown {kind} {name!r}{guess}; valid {kind}s: {', '.join(unique)}{more}"


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
