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
    name: str | None = None  # the JSON key this is the value of ({"api_token": "..."} is a secret by its name)


class _Slot:
    """One entry of a JSON object, whose key may be renamed (a secret used as a key) and value replaced."""

    def __init__(self, container: dict[str, Any], key: str) -> None:
        self.container = container
        self.key = key

    def put(self, value: str) -> None:
        self.container[self.key] = value

    def rename(self, new: str) -> None:
        """Give the entry key ``new`` in place (order kept); ``new#2``, ... when another entry has it."""
        d, old = self.container, self.key
        unique, n = new, 2
        while unique in d and unique != old:
            unique, n = f"{new}#{n}", n + 1
        items = list(d.items())
        d.clear()
        for k, v in items:
            d[unique if k == old else k] = v
        self.key = unique


def _strings(obj: Any, cell: int | None, where: str) -> Iterator[_Text]:
    """Every string of a JSON value, its keys included (a token can be a key: {"hf_...": {...}})."""
    if isinstance(obj, dict):
        for k in list(obj):
            slot = _Slot(obj, k)
            if isinstance(k, str):
                yield _Text(cell, f"{where}, key", k, slot.rename)
            v = obj[k]
            if isinstance(v, str):
                yield _Text(cell, where, v, slot.put, name=k)
            else:
                yield from _strings(v, cell, where)
    elif isinstance(obj, list):  # items are not named by the key above ({"tokens": ["Hello", ...]})
        for i, v in enumerate(obj):
            if isinstance(v, str):
                yield _Text(cell, where, v, _setter(obj, i))
            else:
                yield from _strings(v, cell, where)


def _setter(container: Any, key: Any) -> Callable[[str], None]:
    def put(value: str) -> None:
        container[key] = value

    return put


def _binary_mime(mime: str) -> bool:
    """Is an output of this MIME type base64 of binary data (an image, a PDF) rather than text?"""
    return bool(re.match(r"^(image|audio|video|font)/", mime) or mime == "application/pdf") \
        and not _TEXT_MIME.match(mime)


def _mime_bundle(bundle: dict[str, Any], cell: int | None, where: str) -> Iterator[_Text]:
    for mime in list(bundle):
        value = bundle[mime]
        if isinstance(value, str):
            yield _Text(cell, f"{where}, {mime}", value, _setter(bundle, mime), binary=_binary_mime(mime))
        else:
            yield from _strings(value, cell, f"{where}, {mime}")


def _texts(nb: Any) -> Iterator[_Text]:
    """Every place of a notebook where text (or binary data) lives."""
    for index, cell in enumerate(nb.cells, start=1):
        yield _Text(index, "source", cell.source, _setter(cell, "source"), code=cell.cell_type == "code")
        attachments = cell.get("attachments") or {}
        for name in list(attachments):
            yield _Text(index, "attachment name", name, _Slot(attachments, name).rename)
        for name, bundle in list(attachments.items()):
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
                for i, line in enumerate(tb):  # Python source lines: a bare NAME=value there is a variable
                    yield _Text(index, f"{label}, traceback", line, _setter(tb, i), code=True)
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


@dataclass(frozen=True)
class _Field:
    """One string anywhere in a notebook's JSON (a key or a value), for the check of the written copy."""

    cell: int | None
    where: str
    value: str
    code: bool = False
    name: str | None = None
    binary: bool = False


def _fields(node: Any, path: tuple[Any, ...] = (), name: str | None = None, *,
            code_cells: frozenset[int] = frozenset()) -> Iterator[_Field]:
    """Every key and string value of a notebook read back from its JSON, whatever field holds it (cell
    ids, output names and MIME types too, which :func:`_texts` does not walk); text attachments decoded."""
    if not path:
        code_cells = frozenset(i for i, c in enumerate(node.get("cells") or ()) if c.get("cell_type") == "code")
    if isinstance(node, dict):
        for k, v in node.items():
            yield _field(path, str(k), key=True)
            yield from _fields(v, (*path, k), k if isinstance(k, str) else name, code_cells=code_cells)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _fields(v, (*path, i), code_cells=code_cells)
    elif isinstance(node, str):
        yield _field(path, node, name=name, code_cells=code_cells)


def _field(path: tuple[Any, ...], value: str, *, key: bool = False, name: str | None = None,
           code_cells: frozenset[int] = frozenset()) -> _Field:
    in_cell = len(path) >= 2 and path[0] == "cells" and isinstance(path[1], int)
    cell = path[1] + 1 if in_cell else None
    rest = path[2:] if in_cell else path
    where = ".".join(str(p) for p in rest)
    if not in_cell:
        where = f"notebook {where}".rstrip()
    if key:
        return _Field(cell, f"{where} key" if where else "key", value)
    if not in_cell:
        return _Field(None, where, value, name=name)
    code = (rest == ("source",) or rest[-2:-1] == ("traceback",)) and path[1] in code_cells
    mime = str(rest[-1]) if len(rest) >= 3 else ""
    if (rest[:1] == ("attachments",) and len(rest) == 3) or (rest[:1] == ("outputs",) and rest[2:3] == ("data",)
                                                            and len(rest) == 4):
        name = None  # a MIME type is not a name (the first pass gives these texts none either)
    if rest[:1] == ("attachments",) and len(rest) == 3:
        if not _TEXT_MIME.match(mime):
            return _Field(cell, where, value, binary=True)
        try:
            value = base64.b64decode(value, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return _Field(cell, where, value, binary=True)
    elif rest[:1] == ("outputs",) and len(rest) == 4 and rest[2] == "data" and _binary_mime(mime):
        return _Field(cell, where, value, binary=True)
    return _Field(cell, where, value, code=code, name=name)
