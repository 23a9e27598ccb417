"""What llmtune wrote in a run directory, so that it only ever deletes or overwrites its own files.

`RUN_DIR/.llmtune.json` lists every file and directory a run created (relative paths): the launcher adds
what it writes before the training process starts, and the training process records what each stage adds
(a listing before and after: whatever appeared was written by that stage). A directory the user chose as
`project_name` may hold their own files: those are never in the list, so they are never touched.

It also keeps where the hub token of a run came from and a fingerprint of it (never the token), so that
`resume` can tell whether it would push with the token the run started with.

Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.run_files import MANIFEST_FILE, PROTOCOL_FILES, RunDir, write_atomically


def token_fingerprint(token: str) -> str:
    """A short hash that tells two tokens apart and says nothing about either."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def listing(run_dir: Path) -> set[str]:
    """Every file and directory under run_dir, as relative POSIX paths (symlinks are not followed)."""
    out: set[str] = set()
    root = Path(run_dir)
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        for name in dirnames + filenames:
            out.add((base / name).as_posix())
    return out


class Manifest:
    """The list of what llmtune wrote in one run directory, read from and saved to its MANIFEST_FILE."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = RunDir(self.run_dir).manifest
        self.entries: set[str] = set()
        self.hub_token: dict[str, str] | None = None
        self.readable = True  # False when the file exists but cannot be read: then nothing is ours for sure
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            self.readable = False
            return
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            self.readable = False
            return
        self.entries = {str(p) for p in data["files"] if isinstance(p, str)}
        token = data.get("hub_token")
        if isinstance(token, dict) and all(isinstance(v, str) for v in token.values()):
            self.hub_token = dict(token)

    def save(self) -> None:
        data: dict[str, Any] = {"v": 1, "files": sorted(self.entries | {MANIFEST_FILE})}
        if self.hub_token:
            data["hub_token"] = self.hub_token
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(data, indent=1) + "\n")

    def add(self, *paths: str | Path, tree: bool = False) -> None:
        """Record paths (relative to the run directory, or absolute under it) and save. `tree`: each is a
        directory llmtune creates whole (a checkpoint), so whatever ends up inside it is ours too, even when
        the run is killed before it could list the files."""
        for p in paths:
            p = Path(p)
            rel = (p.relative_to(self.run_dir) if p.is_absolute() else p).as_posix()
            self.entries.add(rel + "/" if tree else rel)
            self.entries.update(parent.as_posix() for parent in Path(rel).parents if parent != Path("."))
        self.save()

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Whatever appears in the run directory while the block runs was written by it: record it, even when
        the block fails (a half-written checkpoint is ours too)."""
        before = listing(self.run_dir)
        try:
            yield
        finally:
            after = listing(self.run_dir)
            # what is gone (checkpoints rotated away, a save that never began) is dropped from the books
            self.entries = {e for e in self.entries if e.rstrip("/") in after}
            try:
                self.add(*sorted(after - before))
            except OSError:  # a full disk: the failure itself is what must be reported
                pass

    def owns(self, rel: str) -> bool:
        """Whether llmtune wrote this path (a protocol request file counts: it only ever holds a request)."""
        if rel in self.entries or rel in PROTOCOL_FILES or rel == MANIFEST_FILE or rel + "/" in self.entries:
            return True
        return any(parent.as_posix() + "/" in self.entries for parent in Path(rel).parents if parent != Path("."))

    def foreign(self) -> list[str]:
        """Files in the run directory llmtune cannot prove it wrote. Directories are not listed: an empty one
        holds nothing to lose, and one with foreign files shows through them."""
        out = []
        for rel in sorted(listing(self.run_dir)):
            path = self.run_dir / rel
            if (path.is_symlink() or not path.is_dir()) and not self.owns(rel):
                out.append(rel)
        return out

    def remove_owned(self, under: str | None = None) -> None:
        """Delete what llmtune wrote (in the directory `under`, itself included, or everywhere): its files, then
        its directories once empty. Nothing else is touched, so a directory holding a file that is not ours
        stays, with that file."""
        top = self.run_dir / under if under else self.run_dir
        for dirpath, dirnames, filenames in os.walk(top, topdown=False):
            base = Path(dirpath).relative_to(self.run_dir)
            for name in filenames:
                rel = (base / name).as_posix()
                if self.owns(rel) and rel != MANIFEST_FILE:
                    (self.run_dir / rel).unlink(missing_ok=True)
            for name in dirnames:
                rel = (base / name).as_posix()
                path = self.run_dir / rel
                if path.is_symlink():
                    if self.owns(rel):
                        path.unlink(missing_ok=True)
                elif self.owns(rel):
                    with contextlib.suppress(OSError):  # not empty: it holds something that is not ours
                        path.rmdir()
        if under and self.owns(under) and top.is_dir() and not top.is_symlink():
            with contextlib.suppress(OSError):
                top.rmdir()
        self.entries = {rel for rel in self.entries if (self.run_dir / rel.rstrip("/")).exists()}
        self.save()
