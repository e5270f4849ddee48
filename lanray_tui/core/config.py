"""Configuration: configs/default.yaml, then the user's XDG file, then ``--config FILE``.

The defaults ship inside the package (``lanray_tui/_data/configs/default.yaml``, in a checkout
a symlink to the top-level ``configs/``) and are read with ``importlib.resources``, so a wheel
or pipx install finds them like a checkout does.

Every key must be known, of the right type and in range; otherwise loading stops with a
:class:`ConfigError` whose one line names the file, the key and the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .paths import Paths

if TYPE_CHECKING:
    from importlib.abc import Traversable

# A pathlib.Path for every installed package (pip unpacks wheels); typed as what
# importlib.resources promises, which is all read_file needs.
DEFAULT_FILE: Traversable = resources.files("lanray_tui") / "_data" / "configs" / "default.yaml"


@dataclass(frozen=True)
class Rule:
    """What one key accepts."""

    types: tuple[type, ...]
    check: Callable[[Any], str | None] | None = None  # returns the reason it is wrong
    nullable: bool = False


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else "must be a port number from 1 to 65535"


def _between(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(v: float) -> str | None:
        if isinstance(v, float) and not math.isfinite(v):
            return "must be a finite number"
        return None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}"

    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: str) -> str | None:
        return None if v in choices else "must be one of: " + ", ".join(choices)

    return check


def _name(v: str) -> str | None:
    if not 1 <= len(v) <= 64:
        return "must be 1 to 64 characters"
    if not all(c.isalnum() or c in "-_." for c in v):
        return "may hold only letters, digits, '-', '_' and '.'"
    return None


def _ipv4_or_empty(v: str) -> str | None:
    if v == "":
        return None
    parts = v.split(".")
    if len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts):
        return None
    return "must be an IPv4 address or empty"


INT, NUM, STR, BOOL = (int,), (int, float), (str,), (bool,)
PORT = Rule(INT, _port)

SCHEMA: dict[str, Rule] = {
    "cluster_name": Rule(STR, _name),
    "discovery.port": PORT,
    "discovery.beacon_interval_s": Rule(NUM, _between(0.1, 60)),
    "discovery.broadcast": Rule(BOOL),
    "pairing.port": PORT,
    "pairing.max_failures": Rule(INT, _between(1, 100)),
    "pairing.code_ttl_s": Rule(INT, _between(10, 86400)),
    "pairing.code_uses": Rule(INT, _between(1, 1000)),
    "cluster.api_port": PORT,
    "cluster.heartbeat_interval_s": Rule(NUM, _between(0.1, 60)),
    "cluster.missed_heartbeats": Rule(INT, _between(1, 100)),
    "cluster.parallel_starts": Rule(INT, _between(0, 256)),
    "lending.drain_deadline_s": Rule(INT, _between(0, 3600)),
    "lending.enabled": Rule(BOOL),
    "lending.idle_minutes": Rule(NUM, _between(0, 1440)),
    "lending.max_owner_load": Rule(NUM, _between(0, 4096)),
    "lending.allow_on_battery": Rule(BOOL),
    "lending.allow_gpu_shared": Rule(BOOL),
    "lending.until": Rule(NUM, _between(0, 1e11)),
    "cluster.expires": Rule(NUM, _between(0, 1e11)),
    "lending.max_temperature_c": Rule(NUM, _between(40, 110)),
    "lending.max_cpu_temperature_c": Rule(NUM, _between(40, 120)),
    "lending.resume_after_s": Rule(NUM, _between(0, 3600)),
    "ray.node_ip": Rule(STR, _ipv4_or_empty),
    "ray.gcs_port": PORT,
    "ray.dashboard_port": PORT,
    "ray.client_server_port": PORT,
    "ray.node_manager_port": PORT,
    "ray.object_manager_port": PORT,
    "ray.dashboard_agent_listen_port": PORT,
    "ray.dashboard_agent_grpc_port": PORT,
    "ray.runtime_env_agent_port": PORT,
    "ray.metrics_export_port": PORT,
    "ray.dashboard_metrics_port": PORT,
    "ray.autoscaler_metrics_port": PORT,
    "ray.min_worker_port": PORT,
    "ray.max_worker_port": PORT,
    "ray.include_dashboard": Rule(BOOL),
    "ray.start_timeout_s": Rule(NUM, _between(5, 3600)),
    "lend.cpus": Rule(INT, _between(0, 4096), nullable=True),
    "lend.gpus": Rule(INT, _between(0, 256), nullable=True),
    "lend.memory_gb": Rule(NUM, _between(0.1, 65536), nullable=True),
    "runtime.kind": Rule(STR, _one_of("native", "docker")),
    "runtime.image": Rule(STR),
    "runtime.docker_network": Rule(STR),
    "paths.data_dir": Rule(STR),
    "paths.state_dir": Rule(STR),
    "jobs.max_running_jobs": Rule(INT, _between(1, 64)),
    "storage.port": PORT,
    "storage.max_gb": Rule(NUM, _between(0.001, 1_000_000)),
}


def _flatten(doc: Mapping[str, Any], file: str, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str):
            raise ConfigError(f"{file}: key {key!r} is not a name")
        is_section = any(k.startswith(dotted + ".") for k in SCHEMA)
        if is_section:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{file}: '{dotted}' must be a section (a mapping of keys)")
            flat.update(_flatten(value, file, dotted + "."))
        elif dotted in SCHEMA:
            flat[dotted] = value
        else:
            raise ConfigError(f"{file}: unknown key '{dotted}'")
    return flat


def _check(key: str, value: Any, file: str) -> None:
    rule = SCHEMA[key]
    if value is None:
        if rule.nullable:
            return
        raise ConfigError(f"{file}: '{key}' must not be empty")
    # bool is an int in Python; a config that says `port: true` is still wrong.
    if isinstance(value, bool) and bool not in rule.types:
        ok = False
    else:
        ok = isinstance(value, rule.types)
    if not ok:
        want = " or ".join(t.__name__ for t in rule.types).replace("int or float", "number")
        raise ConfigError(f"{file}: '{key}' must be {want}, not {type(value).__name__} ({value!r})")
    if rule.check is not None:
        reason = rule.check(value)
        if reason:
            raise ConfigError(f"{file}: '{key}' {reason} (got {value!r})")


def read_file(path: Path | Traversable) -> dict[str, Any]:
    """Read and validate one YAML file into flat dotted keys."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read it ({exc})") from None
    import yaml  # only when a file changed since the last command: see _cached

    # libyaml's parser where PyYAML has it (its wheels do): the same safe subset, quicker
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}: not valid YAML{where}: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{file}: the top level must be a mapping of settings")
    flat = _flatten(doc, file)
    for key, value in flat.items():
        _check(key, value, file)
    return flat


class Config:
    """Validated settings, read as ``cfg["ray.gcs_port"]`` or ``cfg.get(...)``.

    ``sources`` lists the files that were merged, lowest priority first.
    """

    def __init__(self, values: dict[str, Any], sources: list[Path | Traversable]) -> None:
        self._values = values
        self.sources = sources

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def with_overrides(self, **dotted: Any) -> Config:
        """A copy with some keys replaced (keys use '__' for '.'), validated like a file."""
        values = dict(self._values)
        for raw, value in dotted.items():
            key = raw.replace("__", ".")
            if key not in SCHEMA:
                raise ConfigError(f"command line: unknown setting '{key}'")
            _check(key, value, "command line")
            values[key] = value
        _check_cross(values, "command line")
        return Config(values, self.sources)

    def paths(self) -> Paths:
        """This node's directories, with ``paths.*`` settings applied."""
        base = Paths.from_env()
        data, state = self["paths.data_dir"], self["paths.state_dir"]
        return dataclasses.replace(
            base,
            data_dir=Path(data).expanduser() if data else base.data_dir,
            state_dir=Path(state).expanduser() if state else base.state_dir,
        )


def _check_cross(values: Mapping[str, Any], file: str) -> None:
    if values["ray.min_worker_port"] > values["ray.max_worker_port"]:
        raise ConfigError(f"{file}: 'ray.min_worker_port' must not be above 'ray.max_worker_port'")


def load(explicit: Path | None = None, paths: Paths | None = None) -> Config:
    """Merge the default file, the user's XDG config (if present) and ``explicit``."""
    paths = paths or Paths.from_env()
    files: list[Path | Traversable] = [DEFAULT_FILE]
    if paths.user_config.exists():
        files.append(paths.user_config)
    if explicit is not None:
        files.append(explicit)
    stamp = _stamp(files)
    cache = paths.runtime_dir / CACHE_NAME
    values = _cached(cache, stamp)
    if values is None:
        values = {}
        for file in files:
            values.update(read_file(file))
        missing = sorted(set(SCHEMA) - set(values))
        if missing:
            raise ConfigError(f"{DEFAULT_FILE}: default for '{missing[0]}' is missing")
        _check_cross(values, str(files[-1]))
        _keep(cache, stamp, values)
    return Config(values, files)


# ----- the parsed settings, kept between commands ----------------------------------------
# Every command reads the config first; parsing YAML (and loading PyYAML) is most of what a
# quick command like `status` costs. So the merged, validated settings are kept, as JSON, in
# the runtime dir, stamped with each file's path and whole text (and this version of
# lanray-tui): any change to any file, or a file added, parses them all again. The text, not
# the modification time: two writes within one clock tick share a time.

CACHE_NAME = "config.json"


def _stamp(files: list[Path | Traversable]) -> list[Any] | None:
    from .. import __version__

    out: list[Any] = [__version__]
    for file in files:
        try:
            out.append([str(file), file.read_text(encoding="utf-8")])
        except (OSError, UnicodeDecodeError):
            return None  # read_file says what is wrong with it
    return out


def _cached(cache: Path, stamp: list[Any] | None) -> dict[str, Any] | None:
    if stamp is None:
        return None
    import json

    try:
        doc = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("stamp") != stamp:
        return None
    values = doc.get("values")
    if not isinstance(values, dict) or set(values) != set(SCHEMA):
        return None
    return values


def _keep(cache: Path, stamp: list[Any] | None, values: dict[str, Any]) -> None:
    """Write the settings for the next command; a cache that cannot be written is no error."""
    if stamp is None:
        return
    import json
    import os
    import tempfile

    from .paths import ensure_private_dir

    try:
        text = json.dumps({"stamp": stamp, "values": values})  # a YAML date is no JSON: not kept
        ensure_private_dir(cache.parent)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".config-")
    except (OSError, TypeError, ValueError):
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, cache)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
