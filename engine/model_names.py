"""Names of models, read without loading anything: a local directory (relative to the current directory or the
config file's), or a hub model id. Below engine.config and engine.model_info, which both ask.

Standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_local(path: str, base_dir: Path | None) -> Path | None:
    """A relative path is tried against the current directory, then the config file's directory."""
    try:
        p = Path(path).expanduser()
        if p.exists():
            return p
        if base_dir is not None and not p.is_absolute() and (base_dir / p).exists():
            return base_dir / p
    except (OSError, ValueError):  # a name too long, a NUL byte, a lone surrogate: no such file either
        return None
    return None


def model_id_problem(name: str) -> tuple[str, str] | None:
    """(message, fix) when a name that is no local directory cannot be a hub model id either."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return ("no such directory", "check the path (relative paths are read from the current directory, "
                "then from the config file's directory)")
    if not MODEL_ID.match(name) or "--" in name or ".." in name:
        return ("is neither a local model directory nor a valid model id",
                "a model id looks like org/name, e.g. Qwen/Qwen2.5-0.5B-Instruct")
    return None
