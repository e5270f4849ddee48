"""The protocol's field checks and the :class:`Request` base that every request is made of.

A check takes ``(op, field, value)`` and returns the value to keep, or raises
:class:`ProtocolError` with one line that names the op and the field. :mod:`.protocol`
re-exports all of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, TypeVar

from .errors import LanrayError
from .framing import ProtocolError
from .jobs_records import JobError, JobSpec

MAX_DEPTH = 8  # how deep the objects inside a request may nest (a GPU's processes: 4)
MAX_TEXT = 1000  # the longest free-text field of a request
MAX_OP_SHOWN = 40  # how much of a bad op name an error repeats

WHICH_JOB = "which job? (give its id, as 'lanray-tui jobs' lists them)"


# ----- checking fields ---------------------------------------------------------------------

Check = Callable[[str, str, Any], Any]  # (op, field, value) -> the value to keep


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)[:MAX_OP_SHOWN]
    text = " ".join(text.split())
    return text if len(text) <= MAX_OP_SHOWN else text[: MAX_OP_SHOWN - 1] + "…"


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    kinds.update({float: "a fraction", int: "a number", type(None): "null"})
    return kinds.get(type(value), type(value).__name__)


def text(max_len: int = MAX_TEXT, *, nonempty: bool = False) -> Check:
    def check(op: str, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ProtocolError(f"'{op}': '{name}' must be a string, not {_kind(value)}")
        if len(value) > max_len:
            raise ProtocolError(f"'{op}': '{name}' is longer than {max_len} characters")
        if nonempty and not value.strip():
            raise ProtocolError(f"'{op}': '{name}' must not be empty")
        return value

    return check


def whole(lo: int, hi: int) -> Check:
    def check(op: str, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"'{op}': '{name}' must be a whole number, not {_kind(value)}")
        if not lo <= value <= hi:
            raise ProtocolError(f"'{op}': '{name}' must be between {lo} and {hi}")
        return value

    return check


def wholes(lo: int, hi: int, max_items: int) -> Check:
    """A list of whole numbers, each between ``lo`` and ``hi``, at most ``max_items``."""
    one = whole(lo, hi)

    def check(op: str, name: str, value: Any) -> list[int]:
        if not isinstance(value, list):
            raise ProtocolError(f"'{op}': '{name}' must be a list, not {_kind(value)}")
        if len(value) > max_items:
            raise ProtocolError(f"'{op}': '{name}' has more than {max_items} items")
        return [one(op, name, v) for v in value]

    return check


def number(lo: float, hi: float) -> Check:
    def check(op: str, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"'{op}': '{name}' must be a number, not {_kind(value)}")
        if not lo <= value <= hi:
            raise ProtocolError(f"'{op}': '{name}' must be between {lo:g} and {hi:g}")
        return float(value)

    return check


def flag(op: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"'{op}': '{name}' must be true or false, not {_kind(value)}")
    return value


def obj(op: str, name: str, value: Any) -> dict[str, Any]:
    """A JSON object of plain values, nested at most :data:`MAX_DEPTH` deep."""
    if not isinstance(value, dict):
        raise ProtocolError(f"'{op}': '{name}' must be an object, not {_kind(value)}")
    if _depth(value) > MAX_DEPTH:
        raise ProtocolError(f"'{op}': '{name}' nests deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """How deep lists and objects nest in ``value`` (without recursion: any depth is safe)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        todo.extend((c, level + 1) for c in children)
    return deepest


def job_id(op: str, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise ProtocolError(WHICH_JOB)
    return value.strip()


def job_spec(op: str, name: str, value: Any) -> JobSpec:
    try:
        return JobSpec.from_json(value)
    except JobError as exc:
        raise ProtocolError(str(exc)) from None


DEADLINE = whole(0, 7 * 86400)  # seconds a drain may take: a week at most


# ----- the request base --------------------------------------------------------------------

T = TypeVar("T")  # what the request's reply (or each item of its stream) is read into
R = TypeVar("R", bound="Request[Any]")


@dataclass(frozen=True)
class Request(Generic[T]):
    """A request: its op name is ``OP``; ``FIELDS`` checks each field it may carry;
    ``REQUIRED`` names those it must. No request carries a secret: on the cluster API the
    TLS client certificate says who sent it."""

    OP: ClassVar[str] = ""
    REPLY: ClassVar[Any] = None  # the class its reply (each item, for a stream) is read into
    STREAM: ClassVar[bool] = False  # many replies, then {"end": true}
    FIELDS: ClassVar[Mapping[str, Check]] = {}
    REQUIRED: ClassVar[Mapping[str, str]] = {}  # field -> the error when it is missing

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.OP}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.to_json() if hasattr(value, "to_json") else value
        return out

    @classmethod
    def read_reply(cls, result: Any) -> T:
        """The ``result`` of an ``ok`` reply (or of one stream item) as :attr:`REPLY`, or
        :class:`ProtocolError` with one line."""
        try:
            reply: T = cls.REPLY.from_json(result)
        except (LanrayError, KeyError, TypeError, ValueError, AttributeError):
            raise ProtocolError(f"the agent sent a bad reply to '{cls.OP}'") from None
        return reply

    @classmethod
    def of(cls: type[R], **values: Any) -> R:
        """The request made of plain values (what a user typed), checked like the agent
        checks it: :class:`ProtocolError` with the agent's own line for a bad one."""
        return cls.from_json({**values, "op": cls.OP})

    @classmethod
    def from_json(cls: type[R], doc: Any) -> R:
        """Validate ``doc`` as this request; raise :class:`ProtocolError` (one line) if not."""
        if not isinstance(doc, Mapping):
            raise ProtocolError(f"bad request: '{cls.OP}' must be a JSON object")
        if doc.get("op") != cls.OP:
            raise ProtocolError(f"bad request: this is not '{cls.OP}'")
        unknown = sorted(k for k in doc if k not in cls.FIELDS and k != "op")
        if unknown:
            raise ProtocolError(f"'{cls.OP}' has no field '{_short(unknown[0])}'")
        args: dict[str, Any] = {}
        for name, check in cls.FIELDS.items():
            value = doc.get(name)
            if value is None:  # absent (or null): the default, unless it is required
                if name in cls.REQUIRED:
                    raise ProtocolError(cls.REQUIRED[name])
                continue
            args[name] = check(cls.OP, name, value)
        return cls(**args)
