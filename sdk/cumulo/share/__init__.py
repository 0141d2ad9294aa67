"""Notebooks people can send each other: secrets out; the cluster spec and the last run's cost in.

``cumulo share NOTEBOOK.ipynb [-o OUT] [--strip-outputs]`` (:func:`share`) writes a copy that

- has every secret it finds removed from cell sources, outputs (text, HTML, JSON, tracebacks),
  attachments and metadata, each reported by kind and cell, never by value;
- carries, under ``metadata.cumulo``, the cluster spec each cluster of the notebook used
  (provider, GPU type and count, workers, env lock reference) and the last measured run (wall
  time, GPU-hours, cost and its basis, date, cumulo/dask versions), with no addresses,
  certificate paths or secrets;
- is not written at all (:class:`ShareRefused`) when a secret sits where it cannot be removed
  without corrupting what holds it: inside an image or other binary output or attachment, or
  inside an encoded blob (base64 or hex) in text.

What counts as a secret. The detectors of detect-secrets (the ``share`` extra), run on every
line: cloud keys (AWS, Azure storage, IBM), GitHub / GitLab / Slack / Stripe / OpenAI / PyPI /
npm / Discord / Telegram / Twilio / SendGrid / Mailchimp tokens, JWTs, private key blocks,
passwords in URLs, and secret-named assignments (``password = "..."``). Added here on the same
plugin base: Hugging Face tokens, Lambda Cloud keys, Google API keys, ``Authorization:`` /
API-key headers, passwords in connection strings (``...;Password=...;``) and secrets in URL
query strings. Plus the user's own configured secrets, compared by value: cumulo's Lambda key
(environment, key file or keyring: :func:`cumulo.credentials.lambda_api_key`) and environment
variables whose names say they hold a secret (``*_TOKEN``, ``*_SECRET``, ``*PASSWORD*``,
``*API_KEY``, ...). The high-entropy heuristics are off: they flag every hash, task key and
cell id in a Dask notebook, and a redaction tool that cries wolf gets switched off.

Which clusters a notebook used (:func:`notebook_clusters`), most exact first:

1. ``metadata.cumulo.clusters`` written by ``cumulo run`` (cumulo.run): the registry rows that
   the notebook's own kernel created, found by its process id;
2. otherwise registry rows whose name the notebook itself shows: a ``name="..."`` argument in a
   cell that calls ``connect(``, or the cluster card / repr in its outputs (``cumulo cluster
   NAME``, ``<cumulo.Cluster 'NAME' ...``); for each name the newest row created before the
   notebook was last saved. ``cumulo.clusters()`` tables are not read (they list every cluster
   the user has). The run summary then says it was reconstructed from the registry.

Opening a shared notebook: :func:`from_notebook` gives its spec as a ClusterSpec;
``cumulo.connect(spec_from="NOTEBOOK.ipynb")`` goes through :func:`merge_spec_from`, which
prints the last run ("last run: 12 min on 4×A10 ≈ $0.41 (2026-11-20)") and the current
estimate before anything launches.
"""

from __future__ import annotations

import base64
import binascii
import copy
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import CumuloError, MissingDependency, SpecError

if TYPE_CHECKING:
    from .registry import ClusterRecord, Registry
    from .spec import ClusterSpec

__all__ = [
    "METADATA_KEY",
    "Refusal",
    "Removed",
    "Scanner",
    "ShareRefused",
    "ShareReport",
    "configured_secrets",
    "estimate_line",
    "from_notebook",
    "last_run_line",
    "merge_spec_from",
    "notebook_clusters",
    "run_summary",
    "share",
]

#: Where cumulo keeps its facts in a notebook's metadata.
METADATA_KEY = "cumulo"
#: Version of the ``metadata.cumulo`` layout (bumped when a field changes meaning).
METADATA_VERSION = 1
#: The ClusterSpec fields a shared notebook carries; never name, address, env or options.
SPEC_FIELDS = ("provider", "workers", "threads_per_worker", "memory_limit", "gpu", "gpus_per_worker",
               "instance_type", "region", "spot", "budget", "idle_timeout", "image")
#: Spec fields that describe one provider's hardware: dropped when a spec is used with another provider.
HARDWARE_FIELDS = ("gpu", "gpus_per_worker", "instance_type", "region", "spot", "image")
#: Secrets shorter than this are only removed where a detector finds them, never by value everywhere.
_MIN_VALUE = 8
#: Encoded runs (base64, hex) at least this long are decoded and scanned.
_MIN_BLOB = 24
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
#: Characters a token continues with (a detector's match is widened over them, e.g. a JWT's signature).
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=~]*")
_PRIVATE_BLOCK = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY((?: BLOCK)?)-----.*?(?:-----END \1PRIVATE KEY\2-----|\Z)", re.DOTALL)
_PUTTY = re.compile(r"PuTTY-User-Key-File-\d.*?(?:Private-MAC: *[0-9a-fA-F]+|\Z)", re.DOTALL)
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{" + str(_MIN_BLOB) + r",}={0,2}")
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])(?:[0-9a-fA-F]{2}){" + str(_MIN_BLOB // 2 + 8) + r",}(?![0-9A-Za-z])")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\t\r\n]{6,}")
#: Output and attachment MIME types that are text (redacted in place); everything else is binary data.
_TEXT_MIME = re.compile(r"^(text/.*|application/(json|javascript|xml|.*\+json|.*\+xml)|image/svg\+xml)$")
#: Environment variable names that say they hold a secret.
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)",
                         re.IGNORECASE)


class ShareRefused(CumuloError):
    """A secret sits where it cannot be removed safely; nothing was written. ``refusals`` says where."""

    def __init__(self, path: Path, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        lines = "; ".join(r.text() for r in refusals)
        super().__init__(
            f"refusing to share {path.name}: {lines}. Nothing was written. Remove that output or "
            "attachment (or the encoded data) from the notebook, or pass --strip-outputs when it is an "
            "output, and try again.")


@dataclass(frozen=True)
class Removed:
    """Secrets of one kind removed from one place (never the value)."""

    cell: int | None  # 1-based; None for the notebook's own metadata
    where: str
    kind: str
    count: int = 1

    def text(self) -> str:
        """'GitHub Token x2 in cell 3 (output 1, stream)'."""
        n = f" x{self.count}" if self.count > 1 else ""
        return f"{self.kind}{n} in {_place(self.cell, self.where)}"


@dataclass(frozen=True)
class Refusal:
    """A secret that cannot be removed without damaging what holds it."""

    cell: int | None
    where: str
    kind: str
    why: str

    def text(self) -> str:
        """'cell 4 (attachment plot.png): a GitHub Token inside image/png data'."""
        return f"{_place(self.cell, self.where)}: a {self.kind} {self.why}"


def _place(cell: int | None, where: str) -> str:
    return f"cell {cell} ({where})" if cell is not None else where


# -- the scanner --------------------------------------------------------------------------------


def _detect_secrets() -> Any:
    try:
        import detect_secrets.plugins.base as base
    except ImportError as exc:
        raise MissingDependency(
            "cumulo share needs detect-secrets to find secrets: pip install 'cumulo[share]' "
            "(nothing was written)") from exc
    return base


def _extra_plugins(base: Any) -> list[type]:
    """Detectors detect-secrets 1.5 lacks, written on its own RegexBasedDetector base."""
    rx = base.RegexBasedDetector

    class HuggingFaceTokenDetector(rx):  # type: ignore[misc, valid-type]
        """Hugging Face user access tokens (hf_ + 34 letters and digits)."""

        secret_type = "Hugging Face Token"
        denylist = [re.compile(r"\b(hf_[A-Za-z0-9]{30,})\b")]

    class LambdaCloudKeyDetector(rx):  # type: ignore[misc, valid-type]
        """Lambda Cloud API keys (secret_<name>_<random>)."""

        secret_type = "Lambda Cloud API Key"
        denylist = [re.compile(r"\b(secret_[A-Za-z0-9\-]+_[A-Za-z0-9_.\-]{16,})")]

    class GoogleApiKeyDetector(rx):  # type: ignore[misc, valid-type]
        """Google Cloud API keys (AIza + 35 characters)."""

        secret_type = "Google API Key"
        denylist = [re.compile(r"\b(AIza[0-9A-Za-z_\-]{35})")]

    class AuthorizationHeaderDetector(rx):  # type: ignore[misc, valid-type]
        """HTTP credentials: Authorization (Bearer, Basic, Token, ...) and API-key headers."""

        secret_type = "Authorization Header"
        denylist = [
            re.compile(r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token|digest|apikey|"
                       r"api-key|sso-key|key)\s+([A-Za-z0-9_\-.+/=~:]{8,})"),
            re.compile(r"(?i)\b(?:x-api-key|api-key|x-auth-token|x-access-token|private-token)[\"']?\s*[:=]\s*"
                       r"[\"']?([A-Za-z0-9_\-.+/=~]{12,})"),
        ]

    class ConnectionStringPasswordDetector(rx):  # type: ignore[misc, valid-type]
        """Passwords in connection strings (ODBC, ADO.NET, libpq key=value)."""

        secret_type = "Password in Connection String"
        denylist = [
            re.compile(r"(?i)(?:^|[;\s\"'])(?:password|pwd|passwd)\s*=\s*([^;\"'\s&]{4,})(?=;|$|[\"'\s])"),
        ]

    class QueryStringSecretDetector(rx):  # type: ignore[misc, valid-type]
        """Credentials in URL query strings (?token=..., &api_key=..., &sig=...)."""

        secret_type = "Secret in URL Query"
        denylist = [
            re.compile(r"(?i)[?&](?:password|passwd|pwd|token|access_token|api_key|apikey|secret|client_secret|sig)"
                       r"=([^&#\s\"'<>]{6,})"),
        ]

    return [HuggingFaceTokenDetector, LambdaCloudKeyDetector, GoogleApiKeyDetector, AuthorizationHeaderDetector,
            ConnectionStringPasswordDetector, QueryStringSecretDetector]


#: The detect-secrets plugins used, by class name (format-specific first: their kind wins a tie).
_BUILTIN = ("AWSKeyDetector", "AzureStorageKeyDetector", "GitHubTokenDetector", "GitLabTokenDetector",
            "SlackDetector", "StripeDetector", "OpenAIDetector", "PypiTokenDetector", "NpmDetector",
            "DiscordBotTokenDetector", "TelegramBotTokenDetector", "TwilioKeyDetector", "SendGridDetector",
            "MailchimpDetector", "SquareOAuthDetector", "ArtifactoryDetector", "JwtTokenDetector",
            "IbmCosHmacDetector", "IbmCloudIamDetector", "CloudantDetector", "SoftlayerDetector",
            "BasicAuthDetector")
#: Plugins that read an assignment (name = value): their values pass detect-secrets' false-positive filters.
_ASSIGNMENT = {"KeywordDetector", "IbmCloudIamDetector", "CloudantDetector", "SoftlayerDetector",
               "IbmCosHmacDetector", "ConnectionStringPasswordDetector", "QueryStringSecretDetector",
               "ArtifactoryDetector"}


def _builtin_plugins() -> list[Any]:
    import importlib
    import inspect
    import pkgutil

    import detect_secrets.plugins as pkg

    found: dict[str, type] = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{mod.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if name in _BUILTIN:
                found[name] = obj
    return [found[n]() for n in _BUILTIN if n in found]


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
        from .credentials import lambda_api_key

        key = lambda_api_key()
        out.append((key.reveal(), f"cumulo's Lambda Cloud API key (from {key.source})"))
    except CumuloError:
        pass  # none configured (or a key file with the wrong mode: nothing to compare with)
    for name, value in os.environ.items():
        if _SECRET_ENV.search(name) and len(value.strip()) >= 12 and not value.startswith(("/", "~")):
            out.append((value, f"configured secret (environment variable {name})"))
    return out


# -- walking a notebook -------------------------------------------------------------------------


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


# -- the cluster spec and the last run ---------------------------------------------------------


_NAME = r"[a-z0-9][a-z0-9_.\-]{0,62}"
_NAME_ARG = re.compile(r"\bname\s*=\s*[\"'](" + _NAME + r")[\"']")
_NAME_SHOWN = (re.compile(r"cumulo cluster (" + _NAME + r")"), re.compile(r"<cumulo\.Cluster '(" + _NAME + r")'"))


def _names_shown(nb: Any) -> list[str]:
    """Cluster names the notebook itself shows: connect(name=...) arguments, the card and repr in outputs."""
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "connect(" in cell.source:
            names += _NAME_ARG.findall(cell.source)
        for out in cell.get("outputs") or ():
            texts = [out.get("text", "")] + [v for v in (out.get("data") or {}).values() if isinstance(v, str)]
            for t in texts:
                for rx in _NAME_SHOWN:
                    names += rx.findall(t)
    return list(dict.fromkeys(names))


def _versions() -> dict[str, str]:
    import dask
    import distributed

    from ._version import __version__

    return {"cumulo": __version__, "dask": dask.__version__, "distributed": distributed.__version__,
            "python": ".".join(map(str, sys.version_info[:3]))}


def _spend(rec: ClusterRecord) -> tuple[float | None, str, str]:
    """(amount, kind, basis) of a row's spend, from the row alone."""
    from .metering import spend_of

    if rec.rate_per_hour is not None:
        s = spend_of(rec, None)
        return s.amount, s.kind, s.basis
    if rec.cost is not None:
        return float(rec.cost), rec.cost_kind or "estimate", "worker-time x configured rate, recorded by its kernel"
    return None, "none", "no rate set"


def cluster_entry(rec: ClusterRecord) -> dict[str, Any]:
    """What a notebook carries about one cluster: its spec (no address, secrets or paths) and its run."""
    spec: dict[str, Any] = {k: rec.spec[k] for k in SPEC_FIELDS
                            if rec.spec.get(k) is not None and not (k == "spot" and rec.spec[k] is False)}
    spec["provider"] = rec.provider  # what was asked for; what ran (workers, GPUs) is beside it
    lifetime = max(0.0, (rec.closed or time.time()) - rec.created)
    amount, kind, basis = _spend(rec)
    options = rec.spec.get("options") if isinstance(rec.spec.get("options"), dict) else {}
    return {
        "name": rec.name,
        "provider": rec.provider,
        "workers": rec.workers if rec.workers is not None else spec.get("workers"),
        "gpu": spec.get("gpu") or rec.gpu_model,
        "gpu_model": rec.gpu_model,
        "gpus": rec.gpus or 0,
        "gpus_per_worker": spec.get("gpus_per_worker"),
        "backend": rec.backend,
        # cumulo does not capture environment locks yet (DESIGN's env/): a reference appears here once it does
        "env_lock": options.get("env_lock"),
        "spec": spec,
        "run": {
            "seconds": round(lifetime, 1),
            "gpu_hours": round((rec.gpus or 0) * lifetime / 3600.0, 4),
            "cost": None if amount is None else round(amount, 4),
            "cost_kind": kind,
            "cost_basis": basis,
            "rate_per_hour": rec.rate_per_hour,
            "state": rec.state,
        },
        "registry_id": rec.id,
    }


def run_summary(entries: list[dict[str, Any]], *, wall_seconds: float | None, date: str | None,
                source: str, status: str = "ok") -> dict[str, Any]:
    """The last measured run of a notebook, from its clusters' entries (:func:`cluster_entry`)."""
    costs = [e["run"]["cost"] for e in entries if e["run"].get("cost") is not None]
    bases = sorted({e["run"]["cost_basis"] for e in entries if e["run"].get("cost") is not None})
    unpriced = [e["name"] for e in entries if e["run"].get("cost") is None]
    basis = "; ".join(bases) if bases else "no rate set"
    if costs and unpriced:
        basis += f" (no rate for {', '.join(unpriced)})"
    kinds = {e["run"].get("cost_kind") for e in entries if e["run"].get("cost") is not None}
    return {
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1),
        "gpu_hours": round(sum(e["run"].get("gpu_hours") or 0.0 for e in entries), 4),
        "cost": round(sum(costs), 4) if costs else None,
        "cost_kind": "billed" if kinds == {"billed"} else ("estimate" if costs else "none"),
        "cost_basis": basis,
        "date": date or datetime.now(UTC).date().isoformat(),
        "versions": _versions(),
        "status": status,
        "source": source,
    }


def _rows_for(names: list[str], registry: Registry, before: float) -> list[ClusterRecord]:
    rows = registry.list(include_closed=True)
    chosen = []
    for name in names:
        mine = [r for r in rows if r.name == name and r.created <= before]
        if mine:
            chosen.append(max(mine, key=lambda r: r.created))
    return chosen


def notebook_clusters(nb: Any, path: Path | None = None, registry: Registry | None = None) -> dict[str, Any] | None:
    """``metadata.cumulo`` for a notebook: what ``cumulo run`` recorded, else registry rows matched by name.

    None when neither says anything (the notebook started no cluster cumulo knows of).
    """
    meta = dict(nb.metadata.get(METADATA_KEY) or {})
    if meta.get("clusters"):
        return meta
    if registry is None:
        from .registry import Registry

        registry = Registry()
    before = (path.stat().st_mtime if path is not None and path.exists() else time.time()) + 60.0
    rows = _rows_for(_names_shown(nb), registry, before)
    if not rows:
        return None
    entries = [cluster_entry(r) for r in rows]
    start = min(r.created for r in rows)
    end = max((r.closed or time.time()) for r in rows)
    date = datetime.fromtimestamp(end, UTC).date().isoformat()
    summary = run_summary(entries, wall_seconds=end - start, date=date,
                          source="registry rows matched by the cluster names the notebook shows "
                                 "(wall time: first cluster start to last close; versions: this machine)")
    return {"version": METADATA_VERSION, "clusters": entries, "last_run": summary}


def _clean_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Only the fields a shared notebook carries: no registry ids, addresses, paths or free text from rows."""
    clusters = []
    for e in meta.get("clusters") or ():
        if not isinstance(e, dict):
            continue
        spec = {k: v for k, v in dict(e.get("spec") or {}).items() if k in SPEC_FIELDS}
        spec.setdefault("provider", e.get("provider") or "local")
        keep = {k: e.get(k) for k in ("name", "provider", "workers", "gpu", "gpu_model", "gpus", "gpus_per_worker",
                                      "backend", "env_lock")}
        run = {k: v for k, v in dict(e.get("run") or {}).items()
               if k in ("seconds", "gpu_hours", "cost", "cost_kind", "cost_basis", "rate_per_hour")}
        clusters.append({**keep, "spec": spec, "run": run})
    last = {k: v for k, v in dict(meta.get("last_run") or {}).items()
            if k in ("wall_seconds", "gpu_hours", "cost", "cost_kind", "cost_basis", "date", "versions", "status",
                     "source", "parameters")}
    out: dict[str, Any] = {"version": METADATA_VERSION, "clusters": clusters}
    if last:
        out["last_run"] = last
    return out


# -- reading a shared notebook ----------------------------------------------------------------


def _read(path: str | os.PathLike[str]) -> Any:
    import nbformat

    p = Path(path).expanduser()
    if not p.exists():
        raise SpecError(f"no notebook at {p}")
    try:
        return nbformat.read(str(p), as_version=4)
    except Exception as exc:  # nbformat raises several types for a file that is not a notebook
        raise SpecError(f"{p} is not a readable Jupyter notebook: {exc}") from exc


def _entry(meta: dict[str, Any] | None, path: Path, cluster: str | int | None) -> dict[str, Any]:
    clusters = list((meta or {}).get("clusters") or ())
    if not clusters:
        raise SpecError(
            f"{path.name} carries no cluster spec (no metadata.cumulo.clusters): it was not run with `cumulo run` "
            "or shared with `cumulo share` after a run; pass the spec to connect() yourself")
    if cluster is None:
        return dict(clusters[0])
    if isinstance(cluster, int) and not isinstance(cluster, bool):
        if not 0 <= cluster < len(clusters):
            raise SpecError(f"{path.name} has {len(clusters)} cluster spec(s); cluster={cluster} is out of range")
        return dict(clusters[cluster])
    for e in clusters:
        if e.get("name") == cluster:
            return dict(e)
    names = ", ".join(str(e.get("name")) for e in clusters)
    raise SpecError(f"{path.name} has no cluster named {cluster!r}; it has: {names}")


def from_notebook(path: str | os.PathLike[str], *, cluster: str | int | None = None) -> ClusterSpec:
    """The cluster spec a shared (or ``cumulo run``) notebook carries, as a validated ClusterSpec.

    ``cluster``: which one, by name or position, when the notebook used several (default: the first).
    ``spec.to_dict()`` gives plain data; ``cumulo.connect(spec_from=path)`` launches it.
    """
    from .spec import ClusterSpec

    p = Path(path).expanduser()
    entry = _entry(_read(p).metadata.get(METADATA_KEY), p, cluster)
    spec = {k: v for k, v in dict(entry.get("spec") or {}).items() if k in SPEC_FIELDS}
    return ClusterSpec.from_dict(spec)


def _money(amount: float) -> str:
    """Dollars to the cent, or to a hundredth of a cent below one cent (a short run on a cheap shape)."""
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _hardware(entry: dict[str, Any]) -> str:
    gpus = int(entry.get("gpus") or 0)
    workers = entry.get("workers") or (entry.get("spec") or {}).get("workers")
    gpu = entry.get("gpu") or entry.get("gpu_model")
    if not gpus and gpu:
        gpus = int(workers or 1) * int(entry.get("gpus_per_worker") or 1)
    if gpus and gpu:
        return f"{gpus}×{gpu}"
    where = "" if entry.get("provider") in (None, "local") else f"{entry.get('provider')} "
    return f"{workers or '?'} {where}CPU worker{'s' if workers != 1 else ''}"


def last_run_line(meta: dict[str, Any] | None, entry: dict[str, Any] | None = None) -> str | None:
    """'last run: 12 min on 4×A10 ≈ $0.41 (2026-11-20)', or None when the notebook records no run."""
    run = (meta or {}).get("last_run")
    if not run:
        return None
    entry = entry or next(iter((meta or {}).get("clusters") or ()), None) or {}
    cost = run.get("cost")
    money = f" ≈ {_money(cost)}" if cost is not None else ", no rate set"
    status = "" if run.get("status", "ok") == "ok" else f", {run['status']}"
    when = f"{run.get('date', '?')}{status}"
    return f"last run: {_duration(run.get('wall_seconds'))} on {_hardware(entry)}{money} ({when})"


def _estimate(entry: dict[str, Any]) -> tuple[float | None, str]:
    """($/h now, what it rests on) for a cluster spec: the catalog for priced providers, else configured rates."""
    spec = dict(entry.get("spec") or {})
    provider = spec.get("provider") or entry.get("provider") or "local"
    workers = max(int(spec.get("workers") or entry.get("workers") or 1), 1)
    try:
        from . import catalog

        frame = catalog.prices(provider=provider)
    except Exception:
        frame = None
    if frame is not None and not frame.empty:
        if spec.get("instance_type"):
            frame = frame[frame["instance_type"] == spec["instance_type"]]
        else:
            gpu = str(spec.get("gpu") or entry.get("gpu") or "")
            per = int(spec.get("gpus_per_worker") or 1)
            frame = frame[frame["gpu_model"].str.lower().str.startswith(gpu.lower()) & (frame["gpu_count"] == per)]
        if spec.get("region"):
            frame = frame[(frame["region"] == spec["region"]) | (frame["region"] == "all")]
        if frame.empty:
            return None, f"no {provider} price in the catalog for this shape (see `cumulo prices`)"
        row = frame.sort_values("on_demand_per_hour").iloc[0]
        price = float(row["on_demand_per_hour"])
        return price * workers, (f"{workers} x {row['instance_type']} at ${price:,.2f}/h, {provider} list price "
                                 f"({row['source']}, as of {row['as_of']})")
    from .metering import rates

    per_worker, per_gpu = rates()
    if per_worker is None and per_gpu is None:
        return None, "no rate set (cumulo.cost.rate-per-worker-hour / rate-per-gpu-hour)"
    gpus = int(entry.get("gpus") or 0)
    rate = (per_worker or 0.0) * workers + (per_gpu or 0.0) * gpus
    return rate, f"{workers} worker(s) x configured rate"


def estimate_line(meta: dict[str, Any] | None, entry: dict[str, Any] | None = None) -> str:
    """'current estimate: $3.00/h (...); about $0.60 for a run as long as the last one'."""
    entry = entry or next(iter((meta or {}).get("clusters") or ()), None) or {}
    rate, basis = _estimate(entry)
    if rate is None:
        return f"current estimate: {basis}"
    line = f"current estimate: {_money(rate)}/h ({basis})"
    wall = ((meta or {}).get("last_run") or {}).get("wall_seconds")
    if wall:
        line += f"; about {_money(rate * wall / 3600.0)} for a run as long as the last one"
    return line


def merge_spec_from(spec_from: str | os.PathLike[str], target: str | None, spec_fields: dict[str, Any], *,
                    say: Callable[[str], None] = print) -> tuple[str, dict[str, Any]]:
    """connect(spec_from=...): the notebook's spec under what the caller passed, with the last run shown.

    The notebook gives the provider (when ``target`` is None) and every spec field the caller did
    not pass. With another provider than the notebook's, its hardware fields (gpu, instance
    type, region, ...) are dropped. Before returning, ``say`` gets the last-run line and the
    current estimate, so a paid launch shows both before anything starts.
    """
    p = Path(spec_from).expanduser()
    meta = _read(p).metadata.get(METADATA_KEY)
    entry = _entry(meta, p, None)
    spec = {k: v for k, v in dict(entry.get("spec") or {}).items() if k in SPEC_FIELDS}
    provider = spec.pop("provider", "local")
    if target is None:
        if provider == "address":
            raise SpecError(
                f"{p.name} ran on a scheduler given by address, which a shared notebook does not carry: pass it, "
                f"e.g. cumulo.connect('tls://host:8786', spec_from={str(spec_from)!r})")
        target = provider
    elif target != provider:
        dropped = [k for k in HARDWARE_FIELDS if k in spec]
        for k in dropped:
            spec.pop(k)
        if dropped:
            say(f"cumulo: {p.name} ran on {provider}; not carrying its {', '.join(dropped)} over to {target}")
    merged = {**spec, **spec_fields}
    line = last_run_line(meta, entry)
    if line:
        say(f"cumulo: {p.name}: {line}")
    say(f"cumulo: {p.name}: {estimate_line(meta, {**entry, 'spec': {**merged, 'provider': target}})}")
    return target, merged


# -- share --------------------------------------------------------------------------------------


@dataclass
class ShareReport:
    """What :func:`share` did: where it wrote, what it removed (kind and place), what it embedded."""

    source: Path
    out: Path
    removed: list[Removed] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    stripped: bool = False

    @property
    def secrets(self) -> int:
        """How many secrets were removed."""
        return sum(r.count for r in self.removed)

    def text(self) -> str:
        """The lines ``cumulo share`` prints."""
        lines = [f"wrote {self.out}" + (" (outputs stripped)" if self.stripped else "")]
        if self.removed:
            lines.append(f"removed {self.secrets} secret(s):")
            lines += [f"  {r.text()}" for r in self.removed]
        else:
            lines.append("no secrets found")
        clusters = (self.metadata or {}).get("clusters") or []
        if clusters:
            specs = "; ".join(f"{c.get('name')}: {_hardware(c)} ({c.get('provider')})" for c in clusters)
            lines.append(f"embedded {len(clusters)} cluster spec(s): {specs}")
            run_line = last_run_line(self.metadata)
            if run_line:
                lines.append(f"  {run_line}")
        else:
            lines.append("no cluster spec embedded (the notebook shows no cluster cumulo knows of)")
        return "\n".join(lines)


def _strip(nb: Any) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)


def share(
    path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    strip_outputs: bool = False,
    registry: Registry | None = None,
    known: Iterable[tuple[str, str]] | None = None,
) -> ShareReport:
    """Write a shareable copy of a notebook (see the module docstring); raise ShareRefused instead
    when a secret cannot be removed safely.

    ``out``: default ``<name>.shared.ipynb`` beside it. ``known``: (value, kind) secrets to
    remove by value (default :func:`configured_secrets`).
    """
    import nbformat

    src = Path(path).expanduser()
    nb = copy.deepcopy(_read(src))
    dest = Path(out).expanduser() if out is not None else src.with_name(f"{src.stem}.shared.ipynb")
    scanner = Scanner(configured_secrets() if known is None else known)
    if strip_outputs:
        _strip(nb)
    meta = notebook_clusters(nb, src, registry)
    nb.metadata.pop(METADATA_KEY, None)
    if meta:
        nb.metadata[METADATA_KEY] = _clean_metadata(meta)

    texts = list(_texts(nb))
    for t in texts:  # first pass: learn every value, so a token is removed wherever it is repeated
        if not t.binary:
            scanner.learn(t.value, code=t.code)
            if "\x1b[" in t.value:
                scanner.learn(_ANSI.sub("", t.value), code=t.code)
    removed: dict[tuple[int | None, str, str], int] = {}
    refusals: list[Refusal] = []
    for t in texts:
        if t.binary:
            data = _decode_blob(t.value.replace("\n", ""))
            for kind in scanner.kinds_in(data or t.value.encode()):
                mime = t.where.rsplit(", ", 1)[-1]
                refusals.append(Refusal(t.cell, t.where, kind, f"inside {mime} data, which cannot be edited"))
            continue
        new, kinds = scanner.redact(t.value, code=t.code)
        for kind in kinds:
            key = (t.cell, t.where, kind)
            removed[key] = removed.get(key, 0) + 1
        for kind, encoding in _blob_kinds(scanner, new):
            refusals.append(Refusal(t.cell, t.where, kind, f"inside {encoding}-encoded data, which cannot be "
                                                           "redacted in place"))
        if new != t.value:
            t.put(new)
    if refusals:
        raise ShareRefused(src, list(dict.fromkeys(refusals)))
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise CumuloError(f"the shared copy of {src.name} would not be a valid notebook: {exc}") from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dest))
    report = ShareReport(src, dest, [Removed(c, w, k, n) for (c, w, k), n in removed.items()],
                         nb.metadata.get(METADATA_KEY), strip_outputs)
    report.removed.sort(key=lambda r: (r.cell if r.cell is not None else 10**9, r.where, r.kind))
    return report
