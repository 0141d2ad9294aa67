"""`cumulo share`: a planted-secrets notebook comes out clean, unremovable secrets refuse, specs round-trip.

Every fake key is built at run time from random characters (and prefixes split in two), so this
file holds nothing a scanner would take for a live secret.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
import struct
import zlib
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import cumulo
from cumulo.cli import main
from cumulo.life.registry import Registry
from cumulo.share import Scanner, ShareRefused, from_notebook, last_run_line, merge_spec_from, share

pytest.importorskip("detect_secrets")

ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def fake_keys() -> dict[str, str]:
    """One made-up secret of each kind, in the shape real ones have."""
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode().rstrip("=")
    claims = base64.urlsafe_b64encode(json.dumps({"sub": rand(8)}).encode()).decode().rstrip("=")
    return {
        "github": "gh" + "p_" + rand(36),
        "huggingface": "h" + "f_" + rand(34),
        "aws": "AK" + "IA" + rand(16, string.ascii_uppercase + string.digits),
        "slack": "xo" + "xb-" + rand(11, string.digits) + "-" + rand(12, string.digits) + "-" + rand(24),
        "jwt": f"{header}.{claims}.{rand(43)}",
        "stripe": "sk" + "_live_" + rand(24),
        "gitlab": "gl" + "pat-" + rand(20),
        "google": "AI" + "za" + rand(35),
        "lambda": "sec" + "ret_team_" + rand(32, "0123456789abcdef") + "." + rand(32, "0123456789abcdef"),
        "bearer": rand(40),
        "dbpass": rand(14),
        "private": "-----BEGIN " + "RSA PRIVATE" + " KEY-----\n" + rand(64) + "\n" + rand(64) + "\n-----END "
                   + "RSA PRIVATE" + " KEY-----",
        "keyword": rand(22),
    }


def planted(tmp_path: Path, keys: dict[str, str], *, own: str, env_token: str) -> Path:
    """A notebook with secrets in sources, outputs, a traceback, an attachment and markdown."""
    k = keys
    source = (
        "import requests\n"
        f'GITHUB = "{k["github"]}"\n'
        f'hf_token = "{k["huggingface"]}"\n'
        f'headers = {{"Authorization": "Bearer {k["bearer"]}"}}\n'
        f'db = "postgresql://etl:{k["dbpass"]}@db.internal:5432/trips"\n'
        f'password = "{k["keyword"]}"\n'
    )
    code = new_code_cell(source, execution_count=1)
    code.outputs = [
        new_output("stream", name="stdout", text=f"using {k['github']} and AWS_ACCESS_KEY_ID={k['aws']}\n"
                                                f"token for the service: {env_token}\n"),
        new_output("execute_result", execution_count=1, data={
            "text/plain": f"{{'jwt': '{k['jwt']}'}}",
            "text/html": f"<b>Stripe</b> <code>{k['stripe']}</code>",
            "application/json": {"nested": {"google_key": k["google"]}},
        }),
    ]
    failing = new_code_cell("post(SLACK)", execution_count=2)
    failing.outputs = [new_output(
        "error", ename="HTTPError", evalue=f"401 for token {k['slack']}",
        traceback=["\x1b[0;31m---------------------------------------------------------\x1b[0m",
                   f"\x1b[0;32mpost\x1b[0m(\x1b[38;5;124m'{k['slack']}'\x1b[39m)",
                   f"\x1b[0;31mHTTPError\x1b[0m: 401 Unauthorized (Authorization: Bearer {k['bearer']})",
                   f"retry with \x1b[1m{k['gitlab'][:12]}\x1b[0m{k['gitlab'][12:]}"])]  # split by colour codes
    notes = new_markdown_cell(f"Our Lambda key is `{k['lambda']}` and the deploy key:\n\n```\n{k['private']}\n```\n"
                              f"and my own configured key: {own}\n\n![creds](attachment:creds.txt)")
    notes.attachments = {"creds.txt": {"text/plain": base64.b64encode(
        f"aws_key={k['aws']}\nslack={k['slack']}\n".encode()).decode()}}
    nb = new_notebook(cells=[new_markdown_cell("# Planted secrets"), code, failing, notes],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "planted.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_planted_secrets_come_out_clean_and_are_reported_by_kind_and_cell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    keys = fake_keys()
    own = rand(40)  # the user's own Lambda key: matches no pattern, found only by value
    env_token = rand(30)
    monkeypatch.setenv("LAMBDA_API_KEY", own)
    monkeypatch.setenv("ACME_SERVICE_TOKEN", env_token)
    path = planted(tmp_path, keys, own=own, env_token=env_token)
    out = tmp_path / "clean.ipynb"

    assert main(["share", str(path), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    text = out.read_text()
    stored = json.loads(text)["cells"][3]["attachments"]["creds.txt"]["text/plain"]
    attachment = base64.b64decode("".join(stored)).decode()
    everything = text + attachment + printed.out + printed.err
    for name, value in {**keys, "own": own, "env": env_token}.items():
        probe = value.splitlines()[1] if name == "private" else value
        assert probe not in everything, f"the {name} secret survived (or was printed)"
    assert "BEGIN RSA" not in text and "[REDACTED:private-key]" in text
    assert "[REDACTED:github-token]" in text and "[REDACTED:json-web-token]" in text

    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    assert nb.cells[1].source.startswith("import requests")  # the code around the secrets is untouched
    assert 'password = "[REDACTED:secret-keyword]"' in nb.cells[1].source
    assert "postgresql://etl:[REDACTED:basic-auth-credentials]@db.internal" in nb.cells[1].source

    report = printed.out
    for kind, cell, where in [
        ("GitHub Token", 2, "source"), ("Hugging Face Token", 2, "source"), ("Authorization Header", 2, "source"),
        ("Basic Auth Credentials", 2, "source"), ("Secret Keyword", 2, "source"),
        ("GitHub Token", 2, "output 1, stdout"), ("AWS Access Key", 2, "output 1, stdout"),
        ("configured secret (environment variable ACME_SERVICE_TOKEN)", 2, "output 1, stdout"),
        ("JSON Web Token", 2, "output 2, text/plain"), ("Stripe Access Key", 2, "output 2, text/html"),
        ("Google API Key", 2, "output 2, application/json"),
        ("Slack Token", 3, "output 1, error"), ("Slack Token", 3, "output 1, traceback"),
        ("Authorization Header", 3, "output 1, traceback"), ("GitLab Token", 3, "output 1, traceback"),
        ("Lambda Cloud API Key", 4, "source"), ("Private Key", 4, "source"),
        ("cumulo's Lambda Cloud API key (from environment variable LAMBDA_API_KEY)", 4, "source"),
        ("AWS Access Key", 4, "attachment creds.txt, text/plain"),
        ("Slack Token", 4, "attachment creds.txt, text/plain"),
    ]:
        line = rf"\b{re.escape(kind)}( x\d+)? in cell {cell} \({re.escape(where)}\)"
        assert re.search(line, report), f"{kind} in cell {cell} ({where}) not reported:\n{report}"
    assert "cell 1 " not in report  # the clean title cell


def _png(text_chunk: bytes) -> str:
    """A 1x1 PNG with a tEXt chunk (where image tools keep comments), base64 as Jupyter stores it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
           + chunk(b"tEXt", b"Comment\x00" + text_chunk) + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
           + chunk(b"IEND", b""))
    return base64.b64encode(raw).decode()


def _notebook(tmp_path: Path, *cells: object, name: str = "nb.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(new_notebook(cells=list(cells)), str(path))
    return path


def test_a_secret_inside_an_image_or_an_encoded_blob_makes_share_refuse(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = "gh" + "p_" + rand(36)
    plot = new_code_cell("plot()", execution_count=1)
    plot.outputs = [new_output("display_data", data={"image/png": _png(f"token={token}".encode()),
                                                     "text/plain": "<Figure>"})]
    blob = new_code_cell("print(base64.b64encode(creds))", execution_count=2)
    blob.outputs = [new_output("stream", name="stdout", text=base64.b64encode(f"user:{token}".encode()).decode())]
    pic = new_markdown_cell("![diagram](attachment:diagram.png)")
    pic.attachments = {"diagram.png": {"image/png": _png(f"key {token}".encode())}}
    path = _notebook(tmp_path, new_markdown_cell("# refuse"), plot, blob, pic)
    out = tmp_path / "never.ipynb"

    assert main(["share", str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert not out.exists()
    assert "cell 2 (output 1, image/png): a GitHub Token inside image/png data" in err
    assert "cell 3 (output 1, stdout): a GitHub Token inside base64-encoded data" in err
    assert "cell 4 (attachment diagram.png, image/png): a GitHub Token inside image/png data" in err
    assert token not in err

    with pytest.raises(ShareRefused) as refused:  # the attachment still refuses without outputs
        share(path, out=out, strip_outputs=True)
    assert [(r.cell, r.kind) for r in refused.value.refusals] == [(4, "GitHub Token")]
    pic.attachments = {}
    path = _notebook(tmp_path, new_markdown_cell("# refuse"), plot, blob, pic)
    report = share(path, out=out, strip_outputs=True)  # outputs gone: nothing left to refuse
    shared = nbformat.read(str(out), as_version=4)
    assert report.stripped and all(not c.get("outputs") for c in shared.cells)


def test_a_secret_in_hex_or_in_a_code_cells_base64_makes_share_refuse(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = "gh" + "p_" + rand(36)
    hexed = new_code_cell("print(creds.hex())", execution_count=1)
    hexed.outputs = [new_output("stream", name="stdout", text=f"user:{token}".encode().hex() + "\n")]
    encoded = base64.b64encode(f"Authorization: token {token}".encode()).decode()
    source = new_code_cell(f'HEADER = base64.b64decode("{encoded}")', execution_count=2)
    path = _notebook(tmp_path, new_markdown_cell("# refuse"), hexed, source)
    out = tmp_path / "never.ipynb"
    assert main(["share", str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert not out.exists() and token not in err and encoded not in err
    assert "cell 2 (output 1, stdout): a GitHub Token inside hex-encoded data" in err
    assert "cell 3 (source): a GitHub Token inside base64-encoded data" in err
    with pytest.raises(ShareRefused) as refused:  # the source still refuses without outputs
        share(path, out=out, strip_outputs=True)
    assert [(r.cell, r.kind) for r in refused.value.refusals] == [(3, "GitHub Token")]


def test_no_false_positives_in_ordinary_cumulo_output(tmp_path: Path) -> None:
    scanner = Scanner(known=[])
    for text in ("<cumulo.Cluster 'etl' local tls://127.0.0.1:40693 status=running workers=2 memory=23.59 GiB>",
                 "cumulo etl: 1.65s wall · 1.4 task-s on 9 tasks · ~$0.0048 (estimate)",
                 "part.00000.parquet  ('x', 'a3f5c2d19b7e4a60b1f2c3d4e5f60718')",
                 "password = os.environ['DB_PASSWORD']", 'token = "<your token here>"',
                 "Secret(****abcd, from environment variable LAMBDA_API_KEY)"):
        assert scanner.redact(text, code=True) == (text, []), text


def _lambda_notebook(tmp_path: Path) -> Path:
    meta = {"version": 1, "clusters": [{
        "name": "gpus", "provider": "lambda", "workers": 4, "gpu": "A10", "gpus": 4, "gpus_per_worker": 1,
        "spec": {"provider": "lambda", "gpu": "A10", "workers": 4, "budget": 5.0},
        "run": {"seconds": 720.0, "gpu_hours": 0.8, "cost": 0.41, "cost_kind": "estimate"}}],
        "last_run": {"wall_seconds": 720.0, "gpu_hours": 0.8, "cost": 0.41, "cost_kind": "estimate",
                     "cost_basis": "provider clock x catalog price", "date": "2026-11-20"}}
    nb = new_notebook(cells=[new_code_cell("cluster = cumulo.connect('lambda', gpu='A10', workers=4)")],
                      metadata={"cumulo": meta})
    path = tmp_path / "gpus.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_a_shared_spec_shows_the_last_run_and_the_current_estimate(tmp_path: Path) -> None:
    path = _lambda_notebook(tmp_path)
    spec = cumulo.from_notebook(path)
    assert (spec.provider, spec.gpu, spec.workers, spec.budget) == ("lambda", "A10", 4, 5.0)
    said: list[str] = []
    target, fields = merge_spec_from(path, None, {"workers": 2}, say=said.append)
    assert target == "lambda" and fields == {"gpu": "A10", "workers": 2, "budget": 5.0}  # the caller's wins
    assert said[0] == "cumulo: gpus.ipynb: last run: 12 min on 4×A10 ≈ $0.41 (2026-11-20)"
    assert said[1].startswith("cumulo: gpus.ipynb: current estimate: $1.50/h (2 x gpu_1x_a10 at $0.75/h")
    assert "about $0.30 for a run as long as the last one" in said[1]
    said.clear()
    target, fields = merge_spec_from(path, "local", {}, say=said.append)  # another provider: no A10s carried over
    assert target == "local" and fields == {"workers": 4, "budget": 5.0}
    assert "not carrying its gpu over to local" in said[0]


def test_spec_round_trip_through_share_and_spec_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with cumulo.connect("local", name="round-trip", workers=1, threads_per_worker=1, budget=3.0) as cluster:
        assert cluster.client.submit(sum, [1, 2, 3]).result() == 6
        card = cluster._repr_html_()
    cell = new_code_cell('cluster = cumulo.connect("local", name="round-trip", workers=1, threads_per_worker=1)',
                         execution_count=1)
    cell.outputs = [new_output("execute_result", execution_count=1, data={"text/html": card, "text/plain": "-"})]
    path = _notebook(tmp_path, cell, name="analysis.ipynb")
    shared = share(path)
    assert shared.out == tmp_path / "analysis.shared.ipynb"
    meta = nbformat.read(str(shared.out), as_version=4).metadata["cumulo"]
    assert [c["name"] for c in meta["clusters"]] == ["round-trip"]
    assert meta["clusters"][0]["spec"] == {"provider": "local", "workers": 1, "threads_per_worker": 1, "budget": 3.0}
    assert meta["last_run"]["status"] == "ok" and meta["last_run"]["versions"]["cumulo"] == cumulo.__version__
    flat = json.dumps(meta)
    for forbidden in ("tls://", "127.0.0.1", "registry_id", str(tmp_path), "certs", "address"):
        assert forbidden not in flat, forbidden
    assert last_run_line(meta).startswith("last run: ") and "1 CPU worker, no rate set" in last_run_line(meta)

    spec = from_notebook(shared.out)
    assert (spec.provider, spec.workers, spec.threads_per_worker, spec.budget, spec.gpu) == ("local", 1, 1, 3.0, None)
    capsys.readouterr()
    with cumulo.connect(spec_from=shared.out, name="recreated") as again:
        assert again.info()["workers"] == 1 and again.provider == "local"
        row = Registry().find_open("recreated")
        assert row is not None and row.budget == 3.0
    said = capsys.readouterr().out
    assert "analysis.shared.ipynb: last run:" in said and "current estimate: no rate set" in said
    assert Registry().latest("recreated").state == "closed"


def test_spec_from_a_notebook_without_one_says_what_to_do(tmp_path: Path) -> None:
    path = _notebook(tmp_path, new_code_cell("1 + 1"))
    with pytest.raises(cumulo.exceptions.SpecError, match="carries no cluster spec"):
        cumulo.connect(spec_from=path)
    assert Registry().list() == []


def test_without_the_scanner_share_refuses_and_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = _notebook(tmp_path, new_code_cell("1 + 1"))
    monkeypatch.setitem(sys.modules, "detect_secrets.plugins.base", None)  # as if not installed
    with pytest.raises(cumulo.exceptions.MissingDependency, match=r"pip install 'cumulo\[share\]'"):
        share(path)
    assert not (tmp_path / "nb.shared.ipynb").exists()
