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
  inside an encoded blob (base64 or hex) in text; nor when the copy about to be written, read
  back from its JSON (every key and value of every field), still holds a finding;
- is never the notebook itself: an output that resolves to the source (same path, another
  spelling, a link) is refused (:class:`~cumulo.exceptions.SpecError`), as it would replace the
  only copy with a redacted one.

What counts as a secret. The detectors of detect-secrets (the ``share`` extra), run on every
line and on every JSON key as well as value: cloud keys (AWS, Azure storage, IBM), GitHub /
GitLab / Slack / Stripe / OpenAI / PyPI / npm / Discord / Telegram / Twilio / SendGrid /
Mailchimp tokens, JWTs, private key blocks, passwords in URLs, and secret-named assignments
(``password = "..."``). Added here on the same plugin base: Anthropic keys (``sk-ant-...``),
OpenAI project / admin / service-account keys, GitHub fine-grained tokens (``github_pat_...``),
Hugging Face tokens, Lambda Cloud keys, Google API keys, ``Authorization:`` / API-key headers,
passwords in connection strings (``...;Password=...;``) and secrets in URL query strings. Any
value given to a secret-looking name, quoted or not: ``DB_PASSWORD=...`` and
``aws_secret_access_key = ...`` as ``!env``, ``.env`` and ``~/.aws/credentials`` print them,
``"api_token": "..."`` in code or JSON (a bare value in Python is a variable; numbers, flags,
paths, placeholders and words are not secrets). A secret split over concatenated string
literals (``'ghp_...' + '...'``) is found joined. Plus the user's own configured secrets,
compared by value: every provider's declared credentials (``Provider.credentials``, e.g. Lambda's
key from its environment variable, key file or keyring) and environment variables whose names say they hold
a secret (``*_TOKEN``, ``*_SECRET``, ``*PASSWORD*``, ``*API_KEY``, ...). The high-entropy
heuristics are off: they flag every hash, task key and cell id in a Dask notebook, and a
redaction tool that cries wolf gets switched off.

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

The modules: ``detectors`` (which detectors run), ``scanner`` (:class:`Scanner`,
:func:`configured_secrets`), ``notebook`` (every text a notebook holds, reading and stripping it),
``spec`` (``metadata.cumulo``: written by :func:`notebook_clusters`, read by :func:`from_notebook`
and :func:`merge_spec_from`), ``lines`` (the last-run and estimate lines); :func:`share` here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import CumuloError, ShareRefused, SpecError
from .lines import _hardware, estimate_line, last_run_line
from .notebook import _blob_kinds, _decode_blob, _fields, _read, _strip, _texts
from .scanner import _ANSI, Scanner, configured_secrets
from .spec import (
    HARDWARE_FIELDS,
    METADATA_KEY,
    METADATA_VERSION,
    SPEC_FIELDS,
    _clean_metadata,
    cluster_entry,
    from_notebook,
    merge_spec_from,
    notebook_clusters,
    run_summary,
)

if TYPE_CHECKING:
    from ..life.registry import Registry

__all__ = [
    "HARDWARE_FIELDS",
    "METADATA_KEY",
    "METADATA_VERSION",
    "SPEC_FIELDS",
    "Refusal",
    "Removed",
    "Scanner",
    "ShareRefused",
    "ShareReport",
    "cluster_entry",
    "configured_secrets",
    "estimate_line",
    "from_notebook",
    "last_run_line",
    "merge_spec_from",
    "notebook_clusters",
    "run_summary",
    "share",
]


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
    dest = Path(out).expanduser() if out is not None else src.with_name(f"{src.stem}.shared.ipynb")
    _refuse_overwrite(src, dest)
    nb = copy.deepcopy(_read(src))
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
            scanner.learn(t.value, code=t.code, name=t.name)
            if "\x1b[" in t.value:
                scanner.learn(_ANSI.sub("", t.value), code=t.code, name=t.name)
    removed: dict[tuple[int | None, str, str], int] = {}
    refusals: list[Refusal] = []
    for t in texts:
        where = scanner.redact(t.where)[0]  # a place named after a secret (an attachment's name) is shown redacted
        if t.binary:
            data = _decode_blob(t.value.replace("\n", ""))
            for kind in scanner.kinds_in(data or t.value.encode()):
                mime = where.rsplit(", ", 1)[-1]
                refusals.append(Refusal(t.cell, where, kind, f"inside {mime} data, which cannot be edited"))
            continue
        new, kinds = scanner.redact(t.value, code=t.code, name=t.name)
        for kind in kinds:
            key = (t.cell, where, kind)
            removed[key] = removed.get(key, 0) + 1
        for kind, encoding in _blob_kinds(scanner, new):
            refusals.append(Refusal(t.cell, where, kind, f"inside {encoding}-encoded data, which cannot be "
                                                         "redacted in place"))
        if new != t.value:
            t.put(new)
    if refusals:
        raise ShareRefused(src, list(dict.fromkeys(refusals)))
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise CumuloError(f"the shared copy of {src.name} would not be a valid notebook: {exc}") from exc
    data = nbformat.writes(nb)
    left = _still_there(scanner, data)
    if left:
        raise ShareRefused(src, left)
    _write(dest, data)
    report = ShareReport(src, dest, [Removed(c, w, k, n) for (c, w, k), n in removed.items()],
                         nb.metadata.get(METADATA_KEY), strip_outputs)
    report.removed.sort(key=lambda r: (r.cell if r.cell is not None else 10**9, r.where, r.kind))
    return report


def _refuse_overwrite(src: Path, dest: Path) -> None:
    """Refuse an output that is the notebook itself (same path, another spelling of it, a link to it):
    the redacted copy would replace the only one with its secrets."""
    same = dest.resolve() == src.resolve()
    if not same and dest.exists() and src.exists():
        same = os.path.samefile(src, dest)
    if same:
        raise SpecError(
            f"refusing to share {src.name} onto itself: the output {dest} is the notebook {src}, and the "
            "redacted copy would replace your only copy. Nothing was written. Pass another path with -o, "
            f"or leave -o out to write {src.stem}.shared.ipynb beside it.")


def _still_there(scanner: Scanner, data: str) -> list[Refusal]:
    """What the scanner still finds in the copy about to be written, read back from its JSON: every key and
    value of every field, known values included. A finding here means redaction missed a place (a field
    share does not edit, such as a cell id), so the copy is not written."""
    import nbformat

    found: list[Refusal] = []
    for f in _fields(nbformat.reads(data, as_version=4)):
        if f.binary:
            continue  # checked before redaction; never edited
        for _, _, kind in scanner.spans(f.value, code=f.code, name=f.name):
            found.append(Refusal(f.cell, scanner.redact(f.where)[0], kind,
                                 "still in the copy after redaction (share does not edit that field: change it "
                                 "in the notebook by hand)"))
    return list(dict.fromkeys(found))


def _write(dest: Path, data: str) -> None:
    """Write ``data`` to ``dest`` whole or not at all (a temporary file beside it, then renamed)."""
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    mode = dest.stat().st_mode & 0o777 if dest.exists() else 0o644  # mkstemp's 0600 is not what a copy to send wants
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data if data.endswith("\n") else data + "\n")
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
