"""Short, speakable join codes such as ``7-tiger-canvas``.

A code is the password for one pairing (see :mod:`lanray_tui.core.pairing`). It is short so a
person can read it across a room; that is safe only because SPAKE2 allows one online guess per
connection and :class:`CodeBook` burns a code after a few wrong guesses.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

# 256 distinct, common, easy-to-say words: two of them plus a number 1..99 give about 22.6 bits,
# plenty against three online guesses per code.
_WORD_TEXT = """
    acid acorn actor agent alarm album alley amber angel ankle apple apron arena arrow atlas
    attic autumn award bacon badge bagel baker bamboo banjo barn basil beach beard bench berry
    bicycle bingo birch bishop blade blanket blossom bonus boot border bottle bread brick
    bridge broom bubble bucket butter button cabin cable cactus camel camera candle canoe
    canvas canyon carpet carrot castle cattle cave cedar cello chalk cherry chess chief circle
    citrus clock cloud clover coast cobra coffee comet copper coral cotton cowboy crab crane
    cricket crown crystal cube curtain daisy dancer delta desert diamond dinner doctor dolphin
    donkey dragon drum eagle echo elbow ember engine falcon farmer feather fiddle field finger
    flame flower forest fossil fox galaxy garden garlic ginger giraffe glacier globe goat
    golden grape gravel guitar hammer harbor harp hazel helmet hero honey hornet hotel igloo
    island ivory jacket jaguar jelly jersey jigsaw jungle kayak kettle kitten koala ladder
    lagoon lake lantern lemon lion lizard magnet mango maple marble meadow melon mirror monkey
    moon mosaic motor muffin museum nectar needle nickel noodle oasis ocean olive onion orange
    orbit otter oven owl paddle palace panda paper parrot peach peanut pebble pencil pepper
    piano pickle pillow pilot planet plum pocket pony potato puzzle quartz rabbit radio rainbow
    raven ribbon river robin rocket ruby saddle salmon sandal saturn scarf shadow shell silver
    singer sketch sky snow socket spider spoon stone sugar summer sunset swan table tango
    teapot tiger timber toast tomato tulip tunnel turtle valley velvet violin wagon walnut
    whale window winter wizard yacht yogurt zebra zipper
"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())
_WORD_SET = frozenset(WORDS)
_SEPARATORS = re.compile(r"[\s_-]+")
_SHAPE = re.compile(r"([1-9][0-9]?)-([a-z]+)-([a-z]+)")


def new_code() -> str:
    """Return a fresh random code: a number 1..99 and two words, e.g. ``7-tiger-canvas``."""
    number = secrets.randbelow(99) + 1
    return f"{number}-{secrets.choice(WORDS)}-{secrets.choice(WORDS)}"


def normalize(code: str) -> str:
    """Return the canonical form of a typed code: lowercase, '-' between parts, no leading zeros."""
    parts = _SEPARATORS.sub("-", code.strip().lower()).strip("-").split("-")
    # People read "07" off a screen as easily as "7"; both must mean the same code.
    if parts and parts[0].isdigit():
        parts[0] = parts[0].lstrip("0") or "0"
    return "-".join(parts)


def is_valid(code: str) -> bool:
    """Tell whether ``code`` (after :func:`normalize`) has the shape of a join code."""
    match = _SHAPE.fullmatch(normalize(code))
    return match is not None and match.group(2) in _WORD_SET and match.group(3) in _WORD_SET


class CodeBook:
    """The host's current join code, replaced when it expires, is used up or is burned.

    A code is burned after ``max_failures`` wrong guesses so that an attacker gets only a few
    online tries at any one code.
    """

    def __init__(
        self,
        ttl_s: float = 600.0,
        max_uses: int = 5,
        max_failures: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_uses = max_uses
        self.max_failures = max_failures
        self.failures_total = 0
        self._clock = clock
        self._code = ""
        self._created = 0.0
        self._uses = 0
        self._failures = 0
        self._renew()

    def _renew(self) -> None:
        self._code = new_code()
        self._created = self._clock()
        self._uses = 0
        self._failures = 0

    def current(self) -> str:
        """Return the code in force now, making a new one if the old one is spent."""
        if self._uses >= self.max_uses or self.expires_in() <= 0:
            self._renew()
        return self._code

    def use(self) -> None:
        """Record one successful pairing with the current code."""
        self._uses += 1

    def fail(self) -> bool:
        """Record a wrong guess; return True if that burned the code (a new one replaces it)."""
        self._failures += 1
        self.failures_total += 1
        if self._failures >= self.max_failures:
            self._renew()
            return True
        return False

    def expires_in(self) -> float:
        """Seconds until the current code expires (0 when it already has)."""
        return max(0.0, self._created + self.ttl_s - self._clock())
