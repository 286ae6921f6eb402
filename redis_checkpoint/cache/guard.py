"""The semantic cache's guard: when a similar question's answer must not serve another.

An embedding places "from London to New York" next to "from New York to London", "the largest
planet" next to "the smallest planet", "open on Mondays" next to "open on Tuesdays" and "2 + 2"
next to "2 + 3": the same topic, another answer. The guard reads from each question the words
that flip an answer without changing the topic, and refuses a match when they disagree:

- **numbers** (digits, and number words up to twelve), **negation**, and **qualifiers**: time
  words (months, weekdays, seasons, yesterday, tomorrow, before, after), units, currencies and
  languages (human and programming): all must be the same;
- **opposites**: a word on one side of an axis (largest, most, higher... against smallest, least,
  lower...; enable against disable; first against last; best against worst...) in one question and
  on the other side in the other; a question without a word of that axis is no conflict, so "the
  best way to..." as a rephrasing's filler does not block it;
- **directions**: the words after ``from``, and after ``to`` or ``into``, when a question moves
  or converts something (convert, translate, transfer, flight...): each that both say.

A rephrasing keeps these; one that drops a number or a month is a miss, the cheaper mistake.
What is stored: a digest of the numbers, negation and qualifiers, digests of the directions
(both may hold private words), and the opposites as axis names from this module's vocabulary.
``benchmarks/semantic_cache.py`` measures the guard on labelled question pairs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from redis_checkpoint.cache.keys import digest

__all__ = ["guard_conflict", "guard_features"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_NUMBER_WORDS: Final = {
    word: str(n)
    for n, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve".split()  # noqa: SIM905
    )
}
_NEGATIONS: Final = _words("not no never none nothing nobody nowhere neither nor without cannot")
#: Words that qualify a question without changing its topic: times, units, currencies,
#: languages (human and programming). Two questions must name the same ones.
_QUALIFIERS: Final = _words(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays "
    "thursdays fridays saturdays sundays spring summer autumn winter yesterday tomorrow "
    "before after "
    "milliseconds seconds minutes hours weeks months years grams kilograms ounces pounds lbs "
    "tablespoons tablespoon teaspoons teaspoon cups liters litres milliliters gallons quarts "
    "pints miles mile kilometers kilometres km meters metres feet foot inches inch centimeters "
    "millimeters yards acres hectares celsius fahrenheit kelvin mph dollars dollar euros euro "
    "yen usd eur gbp bitcoin "
    "english spanish french german italian portuguese dutch swedish norwegian danish polish "
    "russian ukrainian greek turkish arabic hebrew hindi chinese mandarin cantonese japanese "
    "korean thai vietnamese indonesian latin "
    "python java javascript typescript rust ruby php perl kotlin swift scala haskell bash "
    "powershell sql html css golang"
)
#: Axes of opposite words: (axis, words on one side, words on the other).
_AXES: Final[tuple[tuple[str, frozenset[str], frozenset[str]], ...]] = tuple(
    (axis, _words(high), _words(low))
    for axis, high, low in (
        (
            "degree",
            "largest biggest greatest maximum max most highest tallest longest heaviest "
            "strongest fastest hottest warmest oldest spiciest healthiest more larger bigger "
            "greater higher taller longer heavier stronger faster hotter warmer older spicier "
            "raise increase",
            "smallest tiniest least minimum min lowest shortest lightest weakest slowest "
            "coldest coolest youngest mildest rarest fewest cheapest less fewer smaller lower "
            "shorter lighter weaker slower colder cooler younger milder cheaper reduce decrease",
        ),
        ("quality", "best better", "worst worse"),
        ("order", "first earliest", "last latest final"),
        ("power", "enable activate turn", "disable deactivate"),
        ("open", "open", "close"),
        ("start", "start begin", "stop end"),
        ("membership", "join subscribe", "leave unsubscribe cancel"),
        ("change", "add insert install", "remove delete uninstall"),
        ("trade", "buy", "sell"),
        ("outcome", "win", "lose"),
        ("loan", "lend", "borrow"),
        ("trade-direction", "import", "export"),
        ("transfer", "upload", "download"),
        ("cipher", "encrypt", "decrypt"),
        ("plan", "upgrade", "downgrade"),
        ("temperature", "heat warm hot", "cool cold freeze"),
        ("state", "freeze frozen", "thaw defrost"),
        ("lock", "lock", "unlock"),
        ("link", "connect", "disconnect"),
        ("permission", "allow accept", "block reject deny"),
        ("calculus", "derivative", "integral"),
        ("meaning", "synonym", "antonym"),
        ("vertical", "above over", "below under"),
        ("containment", "inside", "outside"),
        ("sign", "positive", "negative"),
        ("flow", "input", "output"),
        ("latitude", "north northern", "south southern"),
        ("longitude", "east eastern", "west western"),
    )
)
#: Words that make ``from``/``to``/``into`` a direction (a conversion, a move).
_MOVES: Final = _words(
    "from convert converting conversion translate translation transfer move moving switch "
    "migrate export import send sending fly flight flying travel travelling"
)
_SLOTS: Final = _words("from to into")
_FILLERS: Final = _words("a an the my your our their his her its this that these those some")


def guard_features(question: str) -> dict[str, Any]:
    """What the guard compares of a question (see the module docstring); stored beside its
    vector, so it holds digests and this module's axis names only."""
    text = question.lower()
    words = _WORD.findall(text)
    numbers = {n.replace(",", "") for n in _NUMBER.findall(text)}
    numbers |= {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}
    negated = any(w in _NEGATIONS or w.endswith("n't") for w in words)
    qualifiers = {w for w in words if w in _QUALIFIERS}
    present = set(words)
    sides = [
        f"{axis}{sign}"
        for axis, high, low in _AXES
        for sign, side in (("+", high), ("-", low))
        if present & side
    ]
    directions = _directions(words) if present & _MOVES else {}
    return {
        "fixed": str(
            digest(",".join(sorted(numbers)), "not" * negated, ",".join(sorted(qualifiers)))
        ),
        "sides": sorted(sides),
        "directions": {slot: str(digest(*targets)) for slot, targets in directions.items()},
    }


def guard_conflict(stored: Any, asked: Mapping[str, Any]) -> bool:
    """Whether the guard refuses a stored question (its features, as stored: anything
    malformed is refused) for the asked one."""
    if not (isinstance(stored, dict) and isinstance(stored.get("sides"), list)):
        return True
    if stored.get("fixed") != asked["fixed"]:
        return True
    theirs_to, ours_to = stored.get("directions"), asked["directions"]
    if not isinstance(theirs_to, dict):
        return True
    if any(theirs_to[slot] != ours_to[slot] for slot in theirs_to.keys() & ours_to.keys()):
        return True
    theirs, ours = _axes_of(stored["sides"]), _axes_of(asked["sides"])
    return any(theirs[axis] != ours[axis] for axis in theirs.keys() & ours.keys())


def _axes_of(sides: list[Any]) -> dict[str, str]:
    """Each axis a question names, with the sides it takes ("+", "-" or "+-")."""
    found: dict[str, str] = {}
    for side in sides:
        if isinstance(side, str) and side[-1:] in ("+", "-"):
            found[side[:-1]] = "".join(sorted(set(found.get(side[:-1], "") + side[-1])))
    return found


def _directions(words: list[str]) -> dict[str, list[str]]:
    """For ``from`` and ``to`` (``into`` counts as ``to``): the first word after each of its
    occurrences that is not an article or a possessive, in order."""
    found: dict[str, list[str]] = {}
    for i, word in enumerate(words):
        if word in _SLOTS:
            after = next((w for w in words[i + 1 :] if w not in _FILLERS), "")
            found.setdefault("to" if word == "into" else word, []).append(after)
    return found
