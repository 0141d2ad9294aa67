"""Walking a notebook: every text it holds (sources, outputs, tracebacks, attachments, metadata).

Also reading the file, stripping outputs, and decoding the base64 / hex blobs a secret can hide in.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import SpecError

if TYPE_CHECKING:
    from .scanner import Scanner

__all__: list[str] = []

#: Encoded runs (base64, hex) at least this long are decoded and scanned.
_MIN_BLOB = 24
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{" + str(_MIN_BLOB) + r",}={0,2}")
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])(?:[0-9a-fA-F]{2}){" + str(_MIN_BLOB // 2 + 8) + r",}(?![0-9A-Za-z])")
#: Output and attachment MIME types that are text (redacted in place); everything else is binary data.
_TEXT_MIME = re.compile(r"^(text/.*|application/(json|javascript|xml|.*\+json|.*\+xml)|image/svg\+xml)$")


def _read(path: str | os.PathLike[str]) -> Any:
    import nbformat

    p = Path(path).expanduser()
    if not p.exists():
        raise SpecError(f"no notebook at {p}")
    try:
        return nbformat.read(str(p), as_version=4)
    except Exception as exc:  # nbformat raises several types for a file that is not a notebook
        raise SpecError(f"{p} is not a readable Jupyter notebook: {exc}") from exc


def _strip(nb: Any) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)


@dataclass
class _Text:
    """One string of the notebook, with where it is and how to put a new value back."""

    cell: int | None
    where: str
    value: str
    put: Callable[[str], None]
    code: bool = False
    binary: bool = False  # base64 of binary data (an image, a PDF): scanned, never edited


def _strings(obj: Any, cell: int | None, where: str) -> Iterator[_Text]:
    """Every string leaf of a JSON value (dict keys are not secrets' places in nbformat)."""
    if isinstance(obj, dict):
        for k in list(obj):
            v = obj[k]
            if isinstance(v, str):
                yield _Text(cell, where, v, _setter(obj, k))
            else:
                yield from _strings(v, cell, where)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, str):
                yield _Text(cell, where, v, _setter(obj, i))
            else:
                yield from _strings(v, cell, where)


def _setter(container: Any, key: Any) -> Callable[[str], None]:
    def put(value: str) -> None:
        container[key] = value

    return put


def _mime_bundle(bundle: dict[str, Any], cell: int | None, where: str) -> Iterator[_Text]:
    for mime in list(bundle):
        value = bundle[mime]
        if isinstance(value, str):
            text = not bool(re.match(r"^(image|audio|video|font)/", mime) or mime == "application/pdf") \
                or bool(_TEXT_MIME.match(mime))
            yield _Text(cell, f"{where}, {mime}", value, _setter(bundle, mime), binary=not text)
        else:
            yield from _strings(value, cell, f"{where}, {mime}")


def _texts(nb: Any) -> Iterator[_Text]:
    """Every place of a notebook where text (or binary data) lives."""
    for index, cell in enumerate(nb.cells, start=1):
        yield _Text(index, "source", cell.source, _setter(cell, "source"), code=cell.cell_type == "code")
        for name, bundle in (cell.get("attachments") or {}).items():
            for mime in list(bundle):
                value = bundle[mime]
                if not isinstance(value, str):
                    yield from _strings(value, index, f"attachment {name}")
                    continue
                yield from _attachment(bundle, mime, value, index, f"attachment {name}, {mime}")
        for k, out in enumerate(cell.get("outputs") or (), start=1):
            kind = out.get("output_type")
            label = f"output {k}"
            if kind == "stream":
                yield _Text(index, f"{label}, {out.get('name', 'stream')}", out.get("text", ""), _setter(out, "text"))
            elif kind == "error":
                for key in ("ename", "evalue"):
                    yield _Text(index, f"{label}, error", str(out.get(key, "")), _setter(out, key))
                tb = out.get("traceback") or []
                for i, line in enumerate(tb):
                    yield _Text(index, f"{label}, traceback", line, _setter(tb, i))
            else:
                yield from _mime_bundle(out.get("data") or {}, index, label)
                yield from _strings(out.get("metadata") or {}, index, f"{label}, metadata")
        yield from _strings(cell.get("metadata") or {}, index, "cell metadata")
    yield from _strings(nb.metadata, None, "notebook metadata")


def _attachment(bundle: dict[str, Any], mime: str, value: str, cell: int, where: str) -> Iterator[_Text]:
    """An attachment is base64: text ones are decoded, redacted and encoded again; others are binary."""
    if _TEXT_MIME.match(mime):
        try:
            decoded = base64.b64decode(value, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = None
        if decoded is not None:
            def put(new: str) -> None:
                bundle[mime] = base64.b64encode(new.encode("utf-8")).decode("ascii")

            yield _Text(cell, where, decoded, put)
            return
    yield _Text(cell, where, value, _setter(bundle, mime), binary=True)


def _decode_blob(run: str) -> bytes | None:
    text = run.rstrip("=")
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return decoder(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
    return None


def _blob_kinds(scanner: Scanner, text: str) -> list[tuple[str, str]]:
    """(kind, encoding) of secrets hidden in base64 or hex runs of ``text`` (after redaction)."""
    found: list[tuple[str, str]] = []
    for rx, label in ((_BASE64_RUN, "base64"), (_HEX_RUN, "hex")):
        for m in rx.finditer(text):
            run = m.group()
            data = bytes.fromhex(run) if label == "hex" else _decode_blob(run)
            if not data:
                continue
            found += [(k, label) for k in scanner.kinds_in(data)]
    return found
