"""Finding secrets in text and removing them: :class:`Scanner` and the user's :func:`configured_secrets`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

from ..exceptions import CumuloError
from ..providers import provider_classes
from ..security.credentials import find
from .detectors import (
    _ASSIGNMENT,
    SECRET_NAMED,
    _builtin_plugins,
    _detect_secrets,
    _extra_plugins,
    _secret_pairs,
    _secret_word,
    _value_shaped,
)

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
#: A code cell whose body is not Python (%%writefile .env, %%bash): its NAME=value lines are values.
_SHELL_CELL = re.compile(r"\s*%%(writefile|file|bash|sh|script|system|html|markdown|latex|javascript|js|perl|ruby)\b")
#: A string literal on one line (prefixes r, b, u, f), and what may join two into one string.
_LITERAL = re.compile(r"""(?<![\w"'])[rRbBuUfF]{0,2}(?P<q>["'])(?P<body>(?:\\.|(?!(?P=q))[^\\\n])*)(?P=q)""")
_JOIN = re.compile(r"(?:\s|\\\n)*\+?(?:\s|\\\n)*")
#: Environment variable names that say they hold a secret.
#: Environment variables that set cumulo's own configuration (dask's DASK_CUMULO__SECTION__KEY).
_OWN_SETTINGS = "DASK_CUMULO__"
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)",
                         re.IGNORECASE)


def _edge_word(body: str, end: int) -> str:
    """The word (no spaces) a literal's body starts (``end`` 0) or ends (``end`` -1) with."""
    if not body or body[end].isspace():
        return ""
    words = body.split()
    return words[end]


def _literal_runs(text: str) -> Iterator[list[re.Match[str]]]:
    """Runs of two or more string literals joined by ``+`` or by adjacency only, where some join could be
    inside a secret: at least 8 characters without a space across it (``'sk-' + 'ant...'``, not ``'a' + 'b'``)."""
    run: list[re.Match[str]] = []
    joins = False
    for m in _LITERAL.finditer(text):
        if run and _JOIN.fullmatch(text, run[-1].end(), m.start()):
            left, right = _edge_word(run[-1].group("body"), -1), _edge_word(m.group("body"), 0)
            joins = joins or (bool(left) and bool(right) and len(left) + len(right) >= 8)
            run.append(m)
            continue
        if len(run) > 1 and joins:
            yield run
        run, joins = [m], False
    if len(run) > 1 and joins:
        yield run


#: Kinds that say where a secret was assigned, not what it is: a format's own kind wins over them.
_GENERIC_KINDS = frozenset({SECRET_NAMED, "Secret Keyword"})


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

    def learn(self, text: str, *, code: bool = False, name: str | None = None) -> None:
        """Remember the values found in ``text``, so that they are removed wherever else they appear."""
        for start, end, kind, value in self._findings(text, code=code, name=name):
            self._add_value(value, kind)

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

    def _detected(self, text: str, *, code: bool, name: str | None = None) -> Iterator[tuple[int, int, str]]:
        """Spans the detectors find (not the known values)."""
        for start, end, kind, _ in self._findings(text, code=code, name=name):
            yield start, end, kind

    def _findings(self, text: str, *, code: bool, name: str | None = None) -> Iterator[tuple[int, int, str, str]]:
        """(start, end, kind, secret) the detectors find; ``secret`` differs from ``text[start:end]`` only for a
        secret split over concatenated string literals. ``name``: the JSON key ``text`` is the value of."""
        word = _secret_word(name) if name is not None else None
        if word and _value_shaped(text, word=word, bare=False, python=False, colon=True) \
                and self._plausible(text.strip(), text):
            yield 0, len(text), SECRET_NAMED, text  # {"api_token": "..."} in JSON output or metadata
            return
        for rx, kind in ((_PRIVATE_BLOCK, "Private Key"), (_PUTTY, "Private Key")):
            for m in rx.finditer(text):
                yield m.start(), m.end(), kind, m.group()
        python = code and not _SHELL_CELL.match(text)
        offset = 0
        for line in text.splitlines(keepends=True):
            stripped = line.rstrip("\r\n")
            if len(stripped) > 4 and not stripped.isspace():
                py = python and not stripped.lstrip().startswith(("!", "%"))
                yield from ((offset + s, offset + e, k, stripped[s:e]) for s, e, k in self._line(stripped, python=py))
            offset += len(line)
        yield from self._split(text, python=python)

    def _split(self, text: str, *, python: bool) -> Iterator[tuple[int, int, str, str]]:
        """Secrets split over string literals joined by ``+`` or by adjacency (``'ghp_R7t' + 'L8vB...'``).

        Each run of two or more literals is joined and scanned with the text before it on its line
        (so ``TOKEN = 'a' + 'b'`` still has its name); a secret that crosses a join is reported over the
        whole stretch it covers, so that redaction leaves one literal, ``'[REDACTED:...]'``."""
        if "'" not in text and '"' not in text:
            return
        for run in _literal_runs(text):
            joined, where = "", []
            for m in run:
                body = m.start("body")
                joined += m.group("body")
                where += range(body, m.end("body"))
            head = text.rfind("\n", 0, run[0].start()) + 1
            prefix = text[head:run[0].start()] + run[0].group("q")
            line = prefix + joined + run[0].group("q")
            for s, e, kind in self._line(line, python=python):
                s, e = max(s - len(prefix), 0), min(e - len(prefix), len(joined))
                if e <= s:
                    continue
                pieces = [m for m in run if m.start("body") <= where[e - 1] and m.end("body") > where[s]]
                if len(pieces) < 2:
                    continue  # inside one literal: the line scan has it
                if len({m.group("q") for m in pieces}) == 1:
                    yield where[s], where[e - 1] + 1, kind, joined[s:e]
                    continue
                for m in pieces:  # mixed quotes: redact each part in its own literal
                    yield max(where[s], m.start("body")), min(where[e - 1] + 1, m.end("body")), kind, joined[s:e]

    def _line(self, line: str, *, python: bool) -> Iterator[tuple[int, int, str]]:
        """Secrets in one line: detect-secrets' plugins, cumulo's, and values of secret-looking names."""
        filename = "cell.py" if python else "output.txt"
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
        for start, end in _secret_pairs(line, python=python):
            secret = line[start:end].strip()
            if secret and self._plausible(secret, line):
                yield start, end, SECRET_NAMED

    def spans(self, text: str, *, code: bool = False, name: str | None = None) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, kind) of every secret in ``text``, in order.

        ``code``: ``text`` is a code cell's source; ``name``: the JSON key whose value ``text`` is."""
        found = list(self._detected(text, code=code, name=name))
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
                # one secret found twice: name it by its format ("GitHub Token") rather than by the name
                # it was assigned to, whichever detector happened to come first
                named = kind if last[2] in _GENERIC_KINDS and kind not in _GENERIC_KINDS else last[2]
                merged[-1] = (last[0], max(last[1], end), named)
            else:
                merged.append((start, end, kind))
        return merged

    def redact(self, text: str, *, code: bool = False, name: str | None = None) -> tuple[str, list[str]]:
        """``text`` with each secret replaced by ``[REDACTED:<kind>]``, and the kinds removed (one per secret)."""
        if "\x1b[" in text:  # colour codes can split a token in a traceback: a text with secrets loses them
            plain = _ANSI.sub("", text)
            if self.spans(plain, code=code, name=name):
                text = plain
        spans = self.spans(text, code=code, name=name)
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
    """The user's own secrets, by value, with what they are: every provider's credentials that are set
    (``Provider.credentials``: Lambda's key from its variable, file or keyring) and secret-named env vars.

    Values never leave this process: they are compared with the notebook's text, and only their
    kind ("cumulo's Lambda Cloud API key (from environment variable LAMBDA_API_KEY)") is shown.
    """
    out: list[tuple[str, str]] = []
    for credential in dict.fromkeys(c for cls in provider_classes() for c in cls.credentials):
        try:
            key = find(credential)
        except CumuloError:
            continue  # none configured (or a key file with the wrong mode: nothing to compare with)
        out.append((key.reveal(), f"cumulo's {credential.what} (from {key.source})"))
    for name, value in os.environ.items():
        if name.upper().startswith(_OWN_SETTINGS):  # cumulo's settings hold no secret (e.g. azure.credential's
            continue                                # mode "static-token"): its keys come from their own sources
        if _SECRET_ENV.search(name) and len(value.strip()) >= 12 and not value.startswith(("/", "~")):
            out.append((value, f"configured secret (environment variable {name})"))
    return out

