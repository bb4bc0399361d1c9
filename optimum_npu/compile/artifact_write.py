"""Writing a compiled artifact: atomically (a complete new folder renamed into place), never over files the
library did not write, and copies of a verified artifact that carry exactly the files its manifest lists."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from optimum_npu.compile.artifact import read_manifest, verify_artifact, write_manifest
from optimum_npu.schema import MANIFEST_FILE


class SaveTargetError(ValueError):
    """``save_pretrained`` was pointed at a directory it must not replace (it would delete files it did not write)."""


def copy_listed(source: Path, target: Path, files: Iterable[str],
                copy_function: Callable[[str, str], Any] = shutil.copy2) -> None:
    """Copies exactly the listed files (and the manifest) of a verified artifact into ``target``.

    Uses ``shutil.copytree`` with an ``ignore`` filter, so nothing unlisted (a ``.env``, a
    model card, a link) is ever copied.
    """
    keep = set(files) | {MANIFEST_FILE}
    folders = {parent for rel in keep for parent in _parents(rel)}

    def ignore(folder: str, names: list[str]) -> list[str]:
        here = Path(folder).relative_to(source).as_posix()
        rel = (lambda name: name if here == "." else f"{here}/{name}")
        return [n for n in names if rel(n) not in keep and rel(n) not in folders]

    shutil.copytree(source, target, ignore=ignore, copy_function=copy_function, dirs_exist_ok=True)


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _leftover(parent: Path, name: str) -> list[Path]:
    """``.<name>.tmp-*`` / ``.<name>.old-*`` folders an interrupted ``write_atomically`` left (exact names only)."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(tmp|old)-[a-z0-9_]{{8}}")
    return [p for p in parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()] \
        if parent.is_dir() else []


def check_save_target(target: Path) -> None:
    """Refuses a target that replacing would delete files optimum-npu did not write (see ``SaveTargetError``)."""
    fix = "pass a new or empty directory, or a directory that holds a compiled optimum-npu artifact"
    cwd = Path(os.getcwd())
    if target == cwd or target in cwd.parents:
        raise SaveTargetError(f"cannot save into {target}: it is the current working directory (or contains it), "
                              f"and saving replaces the whole directory; {fix}, e.g. save_pretrained('npu-model')")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise SaveTargetError(f"cannot save into {target}: it is a file or a symbolic link, not a directory; {fix}")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_FILE).is_file():
        shown = sorted(p.name for p in target.iterdir())[:5]
        raise SaveTargetError(f"cannot save into {target}: it is not empty ({', '.join(shown)}...) and is not a "
                              f"compiled optimum-npu artifact (no {MANIFEST_FILE}), so replacing it would delete "
                              f"files optimum-npu did not write; {fix}")


def write_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Runs ``fill(tmp_dir)``, writes the manifest, then renames the directory to ``target``.

    A failure leaves ``target`` as it was; an existing ``target`` is replaced only once the new
    artifact is complete, and only when it is empty or an optimum-npu artifact (``check_save_target``).
    Temporary folders a killed earlier save to the same target left behind are removed first.
    """
    target = Path(os.path.abspath(target))
    check_save_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in _leftover(target.parent, target.name):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = None
    try:
        fill(tmp)
        write_manifest(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "artifact")
        os.replace(tmp, target)
    except BaseException:
        if old is not None and (old / "artifact").exists() and not target.exists():
            os.replace(old / "artifact", target)  # put the previous artifact back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def copy_artifact(source: Path, target: Path) -> Path:
    """Copies a verified artifact atomically (used by save_pretrained): only the files its manifest lists."""
    check_save_target(Path(os.path.abspath(target)))  # before hashing: a refused target fails fast
    verify_artifact(source)
    files = read_manifest(source)

    def fill(tmp: Path) -> None:
        copy_listed(Path(source), tmp, files)
        (tmp / MANIFEST_FILE).unlink()  # rewritten by write_atomically from the copied files

    return write_atomically(target, fill)
