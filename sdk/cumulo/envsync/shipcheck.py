"""What a local package's wheel may carry to the workers: nothing git ignores, and no secrets.

A package folder often holds more than its code: a ``.env``, a ``credentials.json``, a key
for a test server. Inside a git work tree the wheel is built from a copy of the folder with
only what git does not ignore (:func:`shippable_tree`), so a build backend that takes every
file it sees (setuptools' ``package-data = {"*": ["*"]}``) cannot pick those up. Every wheel
is then scanned before it is sent (:func:`refuse_secrets`) with the detectors of
``cumulo share`` and the user's own configured secrets, and refused by file, never by value.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from ..exceptions import EnvironmentSyncError, MissingDependency

__all__ = ["refuse_secrets", "shippable_tree"]

#: File names that say they hold secrets, refused whatever their content.
SECRET_NAMES = (".env", ".env.*", ".netrc", ".pypirc", ".git-credentials", "id_rsa", "id_dsa", "id_ecdsa",
                "id_ed25519", "*.p12", "*.pfx")
#: Templates that merely look like one of SECRET_NAMES.
_TEMPLATES = (".env.example", ".env.sample", ".env.template", ".env.dist")
#: Detector kinds that read "name = value": in code and documentation they flag names far more often
#: than secrets (cumulo's own sources trip them), so there they do not refuse; in data files they do.
_ASSIGNMENT_KINDS = {"Secret Keyword", "Secret-named Value", "Authorization Header", "Password in Connection String",
                     "Secret in URL Query"}
_CODE_OR_DOCS = {".py", ".pyi", ".pyx", ".pxd", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".js", ".mjs", ".cjs",
                 ".ts", ".tsx", ".jsx", ".css", ".map", ".html", ".md", ".rst"}


def _work_tree(src: Path) -> Path | None:
    """The top of the git work tree holding ``src`` (None: not in one)."""
    for folder in (src, *src.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _git_files(git: str, src: Path) -> list[str]:
    """Files under ``src`` that git does not ignore (tracked, or untracked and not ignored), relative to it."""
    done = subprocess.run([git, "-C", str(src), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          capture_output=True)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise EnvironmentSyncError(
            f"could not list the files of {src} with git ({why[0]}), so the files it ignores (.env, keys) cannot "
            "be kept out of the wheel for the workers: fix git's access to that folder (for example `git config "
            "--global --add safe.directory PATH` when another user owns it) and reconnect")
    names: list[str] = []
    for raw in filter(None, done.stdout.split(b"\0")):
        rel = os.fsdecode(raw)
        path = src / rel
        if path.is_dir() and not path.is_symlink():  # a submodule: its own ignore rules
            if (path / ".git").exists():
                names += [f"{rel}/{sub}" for sub in _git_files(git, path)]
        elif os.path.lexists(path):  # a tracked file deleted from the work tree is not there to copy
            names.append(rel)
    return names


def _declared(src: Path) -> list[str]:
    """Ignored paths the package's build config names as part of its wheel (hatch's shared-data and
    force-include: a built JupyterLab extension, for one), relative to ``src``."""
    try:
        data = tomllib.loads((src / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    build: dict[str, Any] = data.get("tool", {}).get("hatch", {}).get("build", {})
    out: list[str] = []
    for section in (build, build.get("targets", {}).get("wheel", {})):
        for key in ("shared-data", "force-include"):
            for name in dict(section.get(key) or {}):
                path = (src / name).resolve()
                if path.is_relative_to(src.resolve()) and path.exists():
                    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
                    out += [str(p.relative_to(src.resolve())) for p in files]
    return out


def shippable_tree(src: Path, dest: Path, *, name: str) -> Path:
    """Where to build ``src``'s wheel from: ``src`` itself outside git; inside a git work tree, a copy at
    ``dest`` holding only what git does not ignore, plus what the package's build config names explicitly
    (:func:`_declared`). ``name`` is the distribution, for messages."""
    if _work_tree(src) is None:
        return src
    git = shutil.which("git")
    if git is None:
        raise EnvironmentSyncError(
            f"local package {name} lives in a git work tree ({src}) but git is not installed here, so the files "
            "it ignores (.env, keys) cannot be kept out of the wheel for the workers: install git and reconnect, "
            "or leave the package out with cumulo.env.exclude")
    for rel in dict.fromkeys(_git_files(git, src) + _declared(src)):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target, follow_symlinks=False)
    return dest


def _is_secret_name(filename: str) -> bool:
    base = PurePosixPath(filename).name
    return base not in _TEMPLATES and any(fnmatch.fnmatchcase(base, p) for p in SECRET_NAMES)


def _kinds(scanner: Any, filename: str, data: bytes) -> list[str]:
    """The kinds of secret one file of a wheel holds (see _ASSIGNMENT_KINDS for where some do not count)."""
    path = PurePosixPath(filename)
    loose = path.suffix.lower() in _CODE_OR_DOCS or any(p.endswith(".dist-info") for p in path.parts[:-1])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        kinds = list(scanner.kinds_in(data))
        loose = True  # binary: only what a format-specific detector or a known value finds
    else:
        kinds = [kind for _, _, kind in scanner.spans(text, code=path.suffix in (".py", ".pyi"))]
    return sorted({k for k in kinds if not (loose and k in _ASSIGNMENT_KINDS)})


def refuse_secrets(wheels: list[tuple[str, Path]]) -> None:
    """Scan each (distribution name, wheel file) before it is sent; EnvironmentSyncError naming every
    file that holds a secret, or whose name says it does (SECRET_NAMES), with its kind and never its value.

    Uses ``cumulo share``'s detectors (the ``share`` extra) and the user's configured secrets
    (cumulo's Lambda key, secret-named environment variables), compared by value."""
    if not wheels:
        return
    try:
        # heavy: share's scanner loads detect-secrets (some 40 ms), wanted only when a wheel ships
        from ..share import Scanner, configured_secrets

        scanner = Scanner(configured_secrets())
    except MissingDependency:
        raise MissingDependency(
            "local packages are scanned for secrets before they are sent to the workers, which needs "
            "detect-secrets: pip install 'cumulo[share]' (nothing was sent)") from None
    found: list[str] = []
    for dist, wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if info.is_dir() or info.filename.endswith(".dist-info/RECORD"):
                    continue
                kinds = ["a file name that holds secrets"] if _is_secret_name(info.filename) else []
                kinds += _kinds(scanner, info.filename, zf.read(info))
                if kinds:
                    found.append(f"  {dist}: {info.filename} ({', '.join(kinds)})")
    if found:
        raise EnvironmentSyncError(
            "the wheels of your local packages would carry secrets to the workers (nothing was sent):\n"
            + "\n".join(found) + "\nRemove those files from the package folder or list them in its .gitignore "
            "(what git ignores is left out), or leave the package out with cumulo.env.exclude")
