"""Short, speakable join codes such as ``7-tiger-canvas``, and the host's rules for using them.

A code is the password for one pairing (see :mod:`lanray_tui.core.pairing`). It is short so a
person can read it across a room: 99 x 256 x 256 = 6,488,064 codes, about 22.6 bits. That is
safe only because SPAKE2 allows one online guess per connection and :class:`CodeBook` keeps
the number of online guesses tiny:

- pairing is open only while a code is *live*: issued by ``lanray-tui code`` or shown on the
  host screen, for its TTL (10 minutes) or its number of uses; ``code --close`` closes it;
- a host-wide :class:`Budget` counts failed attempts from every source together: past
  ``soft`` failures pairing shuts for a window that doubles with each failure, and at ``hard``
  failures it stays shut (``LOCKED``) until the owner asks for a new code;
- each source address has its own limit (``per_source``) until the owner's next new code.

Failures never burn the code itself: a stranger who guesses wrong shuts out only its own
address, and the owner's code keeps working for everyone else until the host-wide budget
runs out. :meth:`Budget.max_failures_within` gives the most guesses an attacker with any
number of addresses gets in an hour; the README's Security section turns it into years.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import LanrayError

# 256 distinct, common, easy-to-say words: two of them plus a number 1..99 give about 22.6 bits,
# plenty against the few online guesses the budget allows.
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


CODE_SPACE = 99 * len(WORDS) * len(WORDS)  # how many distinct codes new_code() makes
MAX_REPORTED_SOURCES = 256  # sources named in the failure report; the rest are summed


class CodeState(Enum):
    """Whether a join code is live, and why not."""

    IDLE = "idle"  # none issued yet, or the last one expired or was used up
    LIVE = "live"
    CLOSED = "closed"  # the owner closed it (``code --close``)
    LOCKED = "locked"  # the host-wide budget of failed attempts is spent


@dataclass(frozen=True)
class Budget:
    """How many failed pairing attempts the host takes, all sources together and per source.

    Counts start over only when the owner issues a new code (:meth:`CodeBook.issue`): a code
    the host screen renews by itself when the old one expires keeps the counts.
    """

    soft: int = 5  # failures before backoff starts
    hard: int = 20  # failures after which pairing stays shut until the owner's new code
    per_source: int = 3  # failures one address gets before it is refused
    backoff_s: float = 1.0  # the first backoff window; each further failure doubles it

    def __post_init__(self) -> None:
        if not 1 <= self.soft <= self.hard or self.per_source < 1 or self.backoff_s <= 0:
            raise ValueError(f"inconsistent pairing budget {self!r}")

    def shut_after(self, failures: int) -> float:
        """Seconds pairing stays shut after the ``failures``-th failure (0 below ``soft``)."""
        if failures < self.soft:
            return 0.0
        return self.backoff_s * 2.0 ** (failures - self.soft)

    def max_failures_within(self, seconds: float) -> int:
        """The most failed attempts the host takes within ``seconds`` after a new code, from
        an attacker with as many addresses as it likes who retries the instant pairing opens.
        This is the same rule :meth:`CodeBook.refusal` applies, walked on paper."""
        at, failures = 0.0, 0
        while failures < self.hard and at <= seconds:
            failures += 1
            at += self.shut_after(failures)
        return failures


@dataclass(frozen=True)
class CodeRequest:
    """The ``code`` op's request: what the owner asks of the join code.

    ``{}`` is what the host screen sends while it shows the code: the live code, or a new one
    when the last one expired; never a new one while pairing is closed or locked.
    ``open`` is the owner at the command line (``lanray-tui code``): the live code, or a new
    one that reopens pairing. ``uses``/``minutes`` issue a new code with those limits
    (``code --uses 30 --minutes 30`` for a lab session); ``close`` closes pairing.
    """

    close: bool = False
    open: bool = False
    uses: int | None = None
    minutes: float | None = None

    MAX_USES = 1000
    MAX_MINUTES = 24 * 60

    @classmethod
    def from_json(cls, req: Mapping[str, Any]) -> CodeRequest:
        """Read the op's fields; raises :class:`LanrayError` with one line for a bad value."""
        close, opened = req.get("close", False), req.get("open", False)
        if not isinstance(close, bool) or not isinstance(opened, bool):
            raise LanrayError("'close' and 'open' must be true or false")
        uses, minutes = req.get("uses"), req.get("minutes")
        if uses is not None and (type(uses) is not int or not 1 <= uses <= cls.MAX_USES):
            raise LanrayError(f"--uses must be a whole number from 1 to {cls.MAX_USES}")
        if minutes is not None and (
            type(minutes) not in (int, float) or not 1 <= minutes <= cls.MAX_MINUTES
        ):
            raise LanrayError(f"--minutes must be a number from 1 to {cls.MAX_MINUTES}")
        if close and (uses is not None or minutes is not None):
            raise LanrayError("--close takes no --uses or --minutes")
        return cls(close=close, open=opened, uses=uses, minutes=minutes)

    def to_json(self) -> dict[str, Any]:
        """The fields to send with the ``code`` op (only those that differ from the default)."""
        out: dict[str, Any] = {}
        if self.close:
            out["close"] = True
        if self.open:
            out["open"] = True
        if self.uses is not None:
            out["uses"] = self.uses
        if self.minutes is not None:
            out["minutes"] = self.minutes
        return out


def describe_failures(failures: list[dict[str, Any]]) -> str:
    """One line for people from :meth:`CodeBook.failures_by_source`, e.g.
    ``3 failed pairing attempts from 10.0.0.9``; empty when there were none."""
    if not failures:
        return ""
    total = sum(int(f["count"]) for f in failures)
    shown = [str(f["source"]) for f in failures[:3]]
    more = len(failures) - len(shown)
    where = ", ".join(shown) + (f" and {more} more" if more else "")
    return f"{total} failed pairing attempt{'s' if total != 1 else ''} from {where}"


class CodeBook:
    """The host's join code and its budget of failed attempts.

    Pure and single-threaded (the agent's event loop calls it), with an injectable clock.
    Nothing makes a code by itself except :meth:`show` renewing an expired code for the host
    screen; a closed or locked pairing reopens only by the owner's :meth:`issue`/:meth:`request`.
    """

    def __init__(
        self,
        ttl_s: float = 600.0,
        max_uses: int = 5,
        max_failures: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        budget: Budget | None = None,
    ) -> None:
        if budget is None:
            budget = Budget() if max_failures is None else Budget(per_source=max_failures)
        self.ttl_s = ttl_s
        self.max_uses = max_uses
        self.budget = budget
        self.failures_total = 0  # since the host started, for the report
        self._clock = clock
        self._state = CodeState.IDLE
        self._code = ""
        self._expires = 0.0
        self._uses_left = 0
        self._failures = 0  # since the owner's last new code: the budget
        self._shut_until = -float("inf")
        self._by_source: dict[str, int] = {}  # since the owner's last new code
        self._report: dict[str, int] = {}  # since the host started

    # ----- the code -----------------------------------------------------------------------

    def _refresh(self) -> None:
        if self._state is CodeState.LIVE and (
            self._uses_left <= 0 or self._clock() >= self._expires
        ):
            self._state, self._code = CodeState.IDLE, ""

    def _new_code(self, uses: int | None, ttl_s: float | None) -> str:
        self._code = new_code()
        self._state = CodeState.LIVE
        self._expires = self._clock() + (self.ttl_s if ttl_s is None else ttl_s)
        self._uses_left = self.max_uses if uses is None else uses
        return self._code

    def issue(self, uses: int | None = None, ttl_s: float | None = None) -> str:
        """The owner asks for a new code: it replaces any other, reopens a closed or locked
        pairing, and starts the budget and every source's count over."""
        self._failures = 0
        self._shut_until = -float("inf")
        self._by_source.clear()
        return self._new_code(uses, ttl_s)

    def request(self) -> str:
        """The owner asks for a code (``lanray-tui code``): the live one, or a new one."""
        return self.live() or self.issue()

    def show(self) -> str | None:
        """The code for the host screen: the live one, or a new one in place of one that
        expired or was used up (the budget goes on counting); None while closed or locked."""
        self._refresh()
        if self._state is CodeState.IDLE:
            return self._new_code(None, None)
        return self._code if self._state is CodeState.LIVE else None

    def current(self) -> str:
        """:meth:`show`, with "" for no code (what the ``code`` op returned before
        :meth:`answer`)."""
        return self.show() or ""

    def close(self) -> None:
        """The owner closes pairing (``code --close``) until the next new code."""
        self._state, self._code = CodeState.CLOSED, ""

    def live(self) -> str | None:
        """The code that pairs now, or None."""
        self._refresh()
        return self._code if self._state is CodeState.LIVE else None

    def state(self) -> CodeState:
        self._refresh()
        return self._state

    def expires_in(self) -> float:
        """Seconds until the live code expires (0 when none is live)."""
        if self.live() is None:
            return 0.0
        return max(0.0, self._expires - self._clock())

    def uses_left(self) -> int:
        return self._uses_left if self.live() is not None else 0

    def answer(self, req: CodeRequest) -> dict[str, Any]:
        """Do what the ``code`` op asks and return :meth:`summary` afterwards."""
        if req.close:
            self.close()
        elif req.uses is not None or req.minutes is not None:
            self.issue(req.uses, None if req.minutes is None else req.minutes * 60.0)
        elif req.open:
            self.request()
        else:
            self.show()
        return self.summary()

    # ----- the budget ---------------------------------------------------------------------

    def retry_in(self) -> float:
        """Seconds until the backoff window ends (0 when pairing is not backing off)."""
        return max(0.0, self._shut_until - self._clock())

    def refusal(self, source: str) -> str | None:
        """Why an attempt from ``source`` is refused now (one line for the joiner), or None.

        Asked when a connection arrives (so a refused one costs no SPAKE2 work) and again
        just before its key confirmation is checked, so that parallel attempts cannot go past
        the budget.
        """
        state = self.state()
        if state is CodeState.LOCKED:
            return "pairing is locked after too many failed attempts: ask the host for a new code"
        if state is not CodeState.LIVE:
            return "pairing is closed: no join code is live (ask the host for a new code)"
        if self._by_source.get(source, 0) >= self.budget.per_source:
            return "too many failed attempts from this address: ask the host for a new code"
        wait = self.retry_in()
        if wait > 0:
            return f"pairing is paused after failed attempts: try again in {wait:.0f} s"
        return None

    def fail(self, source: str) -> None:
        """Record one failed key confirmation (a wrong code) from ``source``."""
        self.failures_total += 1
        self._failures += 1
        self._by_source[source] = self._by_source.get(source, 0) + 1
        if source in self._report or len(self._report) < MAX_REPORTED_SOURCES:
            self._report[source] = self._report.get(source, 0) + 1
        else:
            self._report["other addresses"] = self._report.get("other addresses", 0) + 1
        if self._failures >= self.budget.hard:
            self._state, self._code = CodeState.LOCKED, ""
        else:
            self._shut_until = self._clock() + self.budget.shut_after(self._failures)

    def use(self) -> None:
        """Record one successful pairing with the live code."""
        self._uses_left -= 1

    def failures_by_source(self) -> list[dict[str, Any]]:
        """Failed attempts since the host started, most first:
        ``[{"source": "10.0.0.9", "count": 3}]``."""
        ranked = sorted(self._report.items(), key=lambda item: (-item[1], item[0]))
        return [{"source": source, "count": count} for source, count in ranked]

    def summary(self) -> dict[str, Any]:
        """The ``code`` reply and the pairing part of ``status``."""
        failures = self.failures_by_source()
        return {
            "code": self.live() or "",
            "state": self.state().value,
            "expires_in": round(self.expires_in()),
            "uses_left": self.uses_left(),
            "retry_in": round(self.retry_in()),
            "failures_total": self.failures_total,
            "pairing_failures": failures,
            "pairing_summary": describe_failures(failures),
        }
