"""Finding secrets in text and removing them: :class:`Scanner` and the user's :func:`configured_secrets`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

from ..exceptions import CumuloError
from .detectors import _ASSIGNMENT, _builtin_plugins, _detect_secrets, _extra_plugins

__all__ = ["Scanner", "configured_secrets"]

#: Secrets shorter than this are only removed where a detector finds them, never by value everywhere.
_MIN_VALUE = 8
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
#: Characters a token continues with (a detector's match is widened over them, e.g. a JWT's signature).
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=~]*")
_PRIVATE_BLOCK = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY((?: BLOCK)?)-----.*?(?:-----END \1PRIVATE KEY\2-----|\Z)", re.DOTALL)
_PUTTY = re.compile(r"PuTTY-User-Key-File-\d.*?(?:Private-MAC: *[0-9a-fA-F]+|\Z)", re.DOTALL)
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\t\r\n]{6,}")
#: Environment variable names that say they hold a secret.
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)",
                         re.IGNORECASE)


def _slug(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


class Scanner:
    """Find secrets in text with detect-secrets' detectors plus ``known`` values (value, kind).

    :meth:`spans` returns where they are; :meth:`redact` replaces each with
    ``[REDACTED:<kind>]``; :meth:`kinds_in` says which kinds occur in decoded data. Values
    seen once (a token found in a cell's source) are removed everywhere after :meth:`learn`.
    """

    def __init__(self, known: Iterable[tuple[str, str]] = ()) -> None:
        base = _detect_secrets()
        from detect_secrets.filters import heuristic
        from detect_secrets.plugins.keyword import KeywordDetector

        self._heuristic = heuristic
        self._plugins = [*_builtin_plugins(), *(cls() for cls in _extra_plugins(base))]
        self._keyword = KeywordDetector()
        self._values: dict[str, str] = {}
        for value, kind in known:
            self._add_value(value, kind)

    def _add_value(self, value: str, kind: str) -> None:
        value = value.strip()
        if len(value) >= _MIN_VALUE and value not in self._values:
            self._values[value] = kind

    def learn(self, text: str, *, code: bool = False) -> None:
        """Remember the values found in ``text``, so that they are removed wherever else they appear."""
        for start, end, kind in self._detected(text, code=code):
            self._add_value(text[start:end], kind)

    @property
    def values(self) -> int:
        """How many distinct values are removed by value (never the values themselves)."""
        return len(self._values)

    def _plausible(self, secret: str, line: str) -> bool:
        """detect-secrets' filters for false positives of assignment-style detectors, plus placeholders."""
        h = self._heuristic
        if len(secret) < 4 or "REDACTED" in secret or set(secret[:-4]) <= {"*"}:
            return False
        if any(c in secret for c in "()[]{}"):
            return False  # a call or a subscript: an indirect reference, not a value
        return not (h.is_templated_secret(secret) or h.is_prefixed_with_dollar_sign(secret)
                    or h.is_sequential_string(secret) or h.is_potential_uuid(secret)
                    or h.is_likely_id_string(secret, line) or h.is_not_alphanumeric_string(secret))

    def _detected(self, text: str, *, code: bool) -> Iterator[tuple[int, int, str]]:
        """Spans the detectors find (not the known values)."""
        for rx, kind in ((_PRIVATE_BLOCK, "Private Key"), (_PUTTY, "Private Key")):
            for m in rx.finditer(text):
                yield m.start(), m.end(), kind
        filename = "cell.py" if code else "output.txt"
        offset = 0
        for line in text.splitlines(keepends=True):
            stripped = line.rstrip("\r\n")
            if len(stripped) > 4 and not stripped.isspace():
                yield from ((offset + s, offset + e, k) for s, e, k in self._line(stripped, filename))
            offset += len(line)

    def _line(self, line: str, filename: str) -> Iterator[tuple[int, int, str]]:
        for plugin in self._plugins:
            name = type(plugin).__name__
            if name == "PrivateKeyDetector":
                continue
            for rx in getattr(plugin, "denylist", ()):
                for m in rx.finditer(line):
                    group = 1 if m.re.groups and (len(m.group(1) or "") >= 6 or name == "BasicAuthDetector") else 0
                    start, end = m.span(group)
                    if start < 0 or end <= start:
                        continue
                    if name == "JwtTokenDetector" and not plugin.is_formally_valid(m.group(0)):
                        continue
                    if group == 0 or name == "JwtTokenDetector":
                        end += _TOKEN_TAIL.match(line, end).end() - end  # type: ignore[union-attr]
                    secret = line[start:end]
                    if name in _ASSIGNMENT and not self._plausible(secret, line):
                        continue
                    yield start, end, plugin.secret_type
        for found in self._keyword.analyze_line(filename=filename, line=line, line_number=0):
            secret = found.secret_value or ""
            if not secret or not self._plausible(secret, line) or self._heuristic.is_indirect_reference(line):
                continue
            start = line.find(secret)
            while start >= 0:
                yield start, start + len(secret), "Secret Keyword"
                start = line.find(secret, start + len(secret))

    def spans(self, text: str, *, code: bool = False) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, kind) of every secret in ``text``, in order."""
        found = list(self._detected(text, code=code))
        for value, kind in self._values.items():
            start = text.find(value)
            while start >= 0:
                found.append((start, start + len(value), kind))
                start = text.find(value, start + len(value))
        found.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        merged: list[tuple[int, int, str]] = []
        for start, end, kind in found:
            if merged and start < merged[-1][1]:
                last = merged[-1]
                merged[-1] = (last[0], max(last[1], end), last[2])
            else:
                merged.append((start, end, kind))
        return merged

    def redact(self, text: str, *, code: bool = False) -> tuple[str, list[str]]:
        """``text`` with each secret replaced by ``[REDACTED:<kind>]``, and the kinds removed (one per secret)."""
        if "\x1b[" in text:  # colour codes can split a token in a traceback: a text with secrets loses them
            plain = _ANSI.sub("", text)
            if self.spans(plain, code=code):
                text = plain
        spans = self.spans(text, code=code)
        if not spans:
            return text, []
        out, kinds, pos = [], [], 0
        for start, end, kind in spans:
            out.append(text[pos:start])
            out.append(f"[REDACTED:{_slug(kind)}]")
            kinds.append(kind)
            pos = end
        out.append(text[pos:])
        return "".join(out), kinds

    def kinds_in(self, data: bytes) -> list[str]:
        """The kinds of secret in binary or decoded data (its printable runs), known values included."""
        kinds: list[str] = []
        text = "\n".join(m.group().decode("ascii", "replace") for m in _PRINTABLE_RUN.finditer(data))
        kinds += [k for _, _, k in self.spans(text)]
        for value, kind in self._values.items():
            if value.encode() in data and kind not in kinds:
                kinds.append(kind)
        return sorted(set(kinds))


def configured_secrets() -> list[tuple[str, str]]:
    """The user's own secrets, by value, with what they are: cumulo's Lambda key and secret-named env vars.

    Values never leave this process: they are compared with the notebook's text, and only their
    kind ("cumulo's Lambda Cloud API key (from environment variable LAMBDA_API_KEY)") is shown.
    """
    out: list[tuple[str, str]] = []
    try:
        from ..credentials import lambda_api_key

        key = lambda_api_key()
        out.append((key.reveal(), f"cumulo's Lambda Cloud API key (from {key.source})"))
    except CumuloError:
        pass  # none configured (or a key file with the wrong mode: nothing to compare with)
    for name, value in os.environ.items():
        if _SECRET_ENV.search(name) and len(value.strip()) >= 12 and not value.startswith(("/", "~")):
            out.append((value, f"configured secret (environment variable {name})"))
    return out

