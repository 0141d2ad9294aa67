"""Whether the JupyterLab front end must be rebuilt: a digest of what goes into the built extension.

scripts/test reinstalls the Python package only when pyproject.toml, package.json or yarn.lock change, and
the build hook's own check (hatch-jupyter-builder's ``is_stale``) runs only inside that install. So after an
edit of ``extension/src`` a rerun drove the JavaScript built before the edit. This digest covers the sources
of the bundle (src without its tests, style, schema, package.json, yarn.lock, tsconfig.json) by content, so
an edit is a rebuild and a mere touch, a checkout or a change to a test file is not.

    python scripts/frontend_stamp.py check EXTENSION_DIR STAMP   exit 0: built from these sources; 1: rebuild
    python scripts/frontend_stamp.py write EXTENSION_DIR STAMP   record that the build is of these sources
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

#: What the bundle is built from, relative to the extension folder (folders are read whole, in name order).
PARTS = ("package.json", "yarn.lock", "tsconfig.json", "src", "style", "schema")
#: Under src/, the front end's own unit tests: compiled for `jlpm test` only, never bundled.
TESTS = "__tests__"


def digest(extension: Path) -> str:
    """A digest of the extension's bundle sources: each file's path and bytes."""
    h = hashlib.sha256()
    for part in PARTS:
        path = extension / part
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(extension)
            if TESTS in rel.parts or not f.exists():
                continue
            h.update(rel.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:32]


def needs_build(extension: Path, stamp: Path) -> bool:
    """True when the built front end (recorded in ``stamp``) is not of the sources there now."""
    return not stamp.is_file() or stamp.read_text().strip() != digest(extension)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("check", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    extension, stamp = Path(argv[1]), Path(argv[2])
    if argv[0] == "write":
        stamp.write_text(digest(extension) + "\n")
        return 0
    return 1 if needs_build(extension, stamp) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
