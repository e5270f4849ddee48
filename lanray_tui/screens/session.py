"""What every screen needs to reach the core: the config and this node's paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.config import Config
    from ..core.paths import Paths


@dataclass(frozen=True)
class Session:
    """The config file given on the command line (or None), the merged config, the paths."""

    config_file: Path | None
    cfg: Config
    paths: Paths
