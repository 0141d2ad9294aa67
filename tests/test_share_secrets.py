"""`cumulo share` against current token formats, secrets used as JSON keys, unquoted NAME=value lines,
tokens split over string concatenation; the written copy is checked again, and never the source.

Every fake key is built at run time from random characters with its prefix split in two, so this
file holds nothing a scanner (or GitHub's push protection) would take for a live secret.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from cumulo.cli import main
from cumulo.exceptions import SpecError
from cumulo.share import Scanner, ShareRefused, share

pytest.importorskip("detect_secrets")

ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def fake_keys() -> dict[str, str]:
    """Made-up secrets in the shapes of current formats (and of the unquoted values env files hold)."""
    return {
        "anthropic": "sk-" + "ant-api03-" + rand(93, ALNUM + "_-") + "AA",
        "github_fine": "github" + "_pat_" + rand(22) + "_" + rand(59),
        "openai_admin": "sk-" + "admin-" + rand(64, ALNUM + "_-"),
        "openai_project": "sk-" + "proj-" + rand(40) + "T3Blbk" + "FJ" + rand(40),
        "github_split": "gh" + "p_" + rand(36),
        "aws_secret_env": rand(40, ALNUM + "/+"),
        "aws_secret_file": rand(40, ALNUM + "/+"),
        "payments_env": rand(32),
        "payments_dotenv": rand(32),
        "db_password_env": "pw" + rand(10),
        "db_password_dotenv": "pw" + rand(10),
        "repr_token": rand(28),
        "hf_key": "h" + "f_" + rand(34),
        "github_key": "gh" + "p_" + rand(36),
        "github_key2": "gh" + "p_" + rand(36),
        "openai_key": "sk-" + "proj-" + rand(40) + "T3Blbk" + "FJ" + rand(40),
        "json_pair": rand(30),
        "anthropic_meta_key": "sk-" + "ant-api03-" + rand(93, ALNUM + "_-") + "AA",
        "meta_pair": rand(26),
        "fine_nb_key": "github" + "_pat_" + rand(22) + "_" + rand(59),
        "hf_nb_key": "h" + "f_" + rand(34),
    }


#: Ordinary code that names no secret (or only refers to one), and must come out as it went in.
ORDINARY_CODE = ["n_workers=2", "max_tokens=512", "tokenizer = AutoTokenizer.from_pretrained('bert-base')",
                 'print(f"token={token}")', "token = os.environ['HF_TOKEN']"]


def planted(tmp_path: Path, k: dict[str, str]) -> Path:
    """Secrets in every place issue 20 found them to survive: sources, stream output, JSON output keys and
    pairs, cell and notebook metadata (keys and secret-named values), and unquoted NAME=value lines."""
    split_at = 7
    code = new_code_cell(
        "import os\n"
        f"anthropic = \"{k['anthropic']}\"\n"
        f"fine = \"{k['github_fine']}\"\n"
        f"admin = \"{k['openai_admin']}\"\n"
        f"project = \"{k['openai_project']}\"\n"
        f"gh = '{k['github_split'][:split_at]}' + '{k['github_split'][split_at:]}'\n"
        + "\n".join(ORDINARY_CODE) + "\n",
        execution_count=1)
    code.metadata = {"tags": ["keep-me"], "secrets": {k["anthropic_meta_key"]: "scope:all"},
                     "service": {"api_token": k["meta_pair"], "n_workers": "2"}}
    code.outputs = [new_output("execute_result", execution_count=1, data={
        "text/plain": f"{{'PAYMENTS_API_TOKEN': '{k['repr_token']}', 'n_workers': 2}}",
        "application/json": {
            k["hf_key"]: {"scopes": ["read"]},
            k["github_key"]: {"n_workers": 2},
            k["github_key2"]: {"n_workers": 3},
            k["openai_key"]: "project key",
            "service": {"api_token": k["json_pair"], "n_workers": 2},
            "logprobs": [{"token": "Hello", "logprob": -0.25}, {"token": " world", "logprob": -1.5}],
        },
    })]
    env = new_code_cell("!env", execution_count=2)
    env.outputs = [new_output("stream", name="stdout", text=(
        f"AWS_SECRET_ACCESS_KEY={k['aws_secret_env']}\nPAYMENTS_API_TOKEN={k['payments_env']}\n"
        f"DB_PASSWORD={k['db_password_env']}\nPATH=/usr/bin\nHOME=/home/analyst\n"))]
    creds = new_code_cell("!cat ~/.aws/credentials", execution_count=3)
    creds.outputs = [new_output("stream", name="stdout", text=(
        f"[default]\naws_secret_access_key = {k['aws_secret_file']}\nregion = us-east-1\n"))]
    dotenv = new_code_cell(f"%%writefile .env\nPAYMENTS_API_TOKEN={k['payments_dotenv']}\n"
                           f"DB_PASSWORD={k['db_password_dotenv']}\nn_workers=2\n", execution_count=4)
    notes = new_markdown_cell("Run it with `n_workers=2`; keep `PATH=/usr/bin` as it is. The password: ask Alice.")
    nb = new_notebook(cells=[new_markdown_cell("# Planted"), code, env, creds, dotenv, notes], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "deploy": {k["fine_nb_key"]: {"n_workers": 2}, k["hf_nb_key"]: "read"},
    })
    path = tmp_path / "planted.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_current_formats_keys_and_unquoted_pairs_do_not_survive(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = fake_keys()
    path = planted(tmp_path, keys)
    out = tmp_path / "shared.ipynb"

    assert main(["share", str(path), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    data = out.read_bytes()
    for name, value in keys.items():
        assert value.encode() not in data, f"the {name} secret survived in the shared copy"
        assert value not in printed.out + printed.err, f"the {name} secret was printed"
    for part in (keys["github_split"][:7], keys["github_split"][7:]):  # neither half of the split token
        assert part.encode() not in data

    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    source = nb.cells[1].source
    for line in ORDINARY_CODE:
        assert line in source, f"{line!r} was redacted"
    assert "gh = '[REDACTED:github-token]'\n" in source  # the joined literals became one
    assert nb.cells[2].outputs[0].text.endswith("PATH=/usr/bin\nHOME=/home/analyst\n")
    assert "DB_PASSWORD=[REDACTED:secret-named-value]" in nb.cells[2].outputs[0].text
    assert "region = us-east-1" in nb.cells[3].outputs[0].text
    assert nb.cells[4].source.endswith("\nn_workers=2\n")
    assert nb.cells[5].source == "Run it with `n_workers=2`; keep `PATH=/usr/bin` as it is. The password: ask Alice."
    assert nb.cells[1].metadata["tags"] == ["keep-me"] and nb.cells[1].metadata["service"]["n_workers"] == "2"
    shown = nb.cells[1].outputs[0].data["application/json"]
    assert len(shown) == 6 and shown["service"]["n_workers"] == 2  # every entry kept, renamed, none lost
    assert [t["token"] for t in shown["logprobs"]] == ["Hello", " world"]  # words, not access tokens
    assert sorted(v["n_workers"] for v in shown.values() if isinstance(v, dict) and "scopes" not in v) == [2, 2, 3]
    assert {shown["[REDACTED:github-token]"]["n_workers"], shown["[REDACTED:github-token]#2"]["n_workers"]} == {2, 3}
    assert "'n_workers': 2" in nb.cells[1].outputs[0].data["text/plain"]
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert list(nb.metadata["deploy"].values()) == [{"n_workers": 2}, "read"]

    report = printed.out
    for line in ("Anthropic API Key in cell 2 (source)", "GitHub Token x2 in cell 2 (source)",
                 "OpenAI Token x2 in cell 2 (source)", "OpenAI Token in cell 2 (output 1, application/json, key)",
                 "GitHub Token x2 in cell 2 (output 1, application/json, key)",
                 "Hugging Face Token in cell 2 (output 1, application/json, key)",
                 "Secret-named Value in cell 2 (output 1, application/json)",
                 "Secret-named Value in cell 2 (output 1, text/plain)",
                 "Anthropic API Key in cell 2 (cell metadata, key)", "Secret-named Value in cell 2 (cell metadata)",
                 "AWS Secret Access Key in cell 3 (output 1, stdout)",
                 "Secret-named Value x2 in cell 3 (output 1, stdout)",
                 "AWS Secret Access Key in cell 4 (output 1, stdout)", "Secret-named Value x2 in cell 5 (source)",
                 "GitHub Token in notebook metadata, key", "Hugging Face Token in notebook metadata, key"):
        assert line in report, f"{line!r} not reported:\n{report}"
    assert "cell 6" not in report and "cell 1 " not in report


def _notebook(tmp_path: Path, *cells: object, name: str = "nb.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(new_notebook(cells=list(cells)), str(path))
    return path


def test_an_output_that_is_the_notebook_itself_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    token = "gh" + "p_" + rand(36)
    path = _notebook(tmp_path, new_code_cell(f'GITHUB = "{token}"'), name="only.ipynb")
    before = path.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.ipynb").symlink_to(path)
    os.link(path, tmp_path / "hard.ipynb")
    monkeypatch.chdir(tmp_path / "sub")

    for spelling in (str(path), "../only.ipynb", "../sub/../only.ipynb", str(tmp_path / "link.ipynb"),
                     str(tmp_path / "hard.ipynb")):
        assert main(["share", str(path), "-o", spelling]) == 1, spelling
        err = capsys.readouterr().err
        assert "is the notebook" in err and "Nothing was written" in err and token not in err
        with pytest.raises(SpecError, match="onto itself"):
            share("../only.ipynb", out=spelling)
        assert path.read_bytes() == before, f"-o {spelling} changed the source"
    assert {p.name for p in tmp_path.iterdir()} <= {"hard.ipynb", "link.ipynb", "only.ipynb", "registry.db", "sub"}

    report = share(path)  # the default name beside it is still fine
    assert report.out == tmp_path / "only.shared.ipynb" and token.encode() not in report.out.read_bytes()


@pytest.mark.parametrize("place", ["id", "outputs.0.data key"])
def test_a_finding_left_in_the_copy_refuses_the_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], place: str) -> None:
    """A token where share redacts nothing: a cell's id (nbformat allows 64 letters, digits, - and _) or an
    output's MIME type. The check of the copy about to be written finds it, and nothing is written."""
    token = "gh" + "p_" + rand(36)
    cell = new_code_cell("n_workers = 2", execution_count=1)
    if place == "id":
        cell.id = token
    else:
        cell.outputs = [new_output("display_data", data={f"application/vnd.{token}+json": {"n": 2},
                                                         "text/plain": "2"})]
    path = _notebook(tmp_path, new_markdown_cell("# ids"), cell)
    nbformat.validate(nbformat.read(str(path), as_version=4))  # a valid notebook, as a user could have
    out = tmp_path / "never.ipynb"

    with pytest.raises(ShareRefused) as refused:
        share(path, out=out)
    assert [(r.cell, r.where, r.kind) for r in refused.value.refusals] == [(2, place, "GitHub Token")]
    assert "still in the copy after redaction" in str(refused.value) and token not in str(refused.value)
    assert not out.exists() and not list(tmp_path.glob(".never.ipynb.*"))

    assert main(["share", str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"cell 2 ({place}): a GitHub Token still in the copy" in err and token not in err
    assert not out.exists()


def test_a_secret_attachment_name_is_redacted_and_never_shown(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = "h" + "f_" + rand(34)
    note = new_markdown_cell(f"![notes](attachment:{token}.txt)")
    note.attachments = {f"{token}.txt": {"text/plain": "bm90aGluZyBzZWNyZXQ="}}  # "nothing secret"
    path = _notebook(tmp_path, note)
    out = tmp_path / "shared.ipynb"

    assert main(["share", str(path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert token not in printed and token.encode() not in out.read_bytes()
    shared = json.loads(out.read_text())["cells"][0]
    assert list(shared["attachments"]) == ["[REDACTED:hugging-face-token].txt"]
    assert "attachment:[REDACTED:hugging-face-token].txt" in "".join(shared["source"])  # the link still matches
    assert "Hugging Face Token in cell 1 (attachment name)" in printed


@pytest.mark.parametrize("template", [
    "gh = '{a}' + '{b}'\n",
    "gh = ('{a}'\n      '{b}')\n",
    "gh = \"{a}\" \\\n    + \"{b}\"\n",
    "headers = {{'x': '{a}' + '{b}'}}\n",
])
def test_a_token_split_over_string_literals_is_found_joined(template: str) -> None:
    token = "gh" + "p_" + rand(36)
    a, b = token[:9], token[9:]
    scanner = Scanner(known=[])
    code = template.format(a=a, b=b)
    new, kinds = scanner.redact(code, code=True)
    assert kinds == ["GitHub Token"] and a not in new and b not in new
    assert "'[REDACTED:github-token]'" in new or '"[REDACTED:github-token]"' in new  # one literal left
    scanner.learn(code, code=True)  # the joined value is learned: printed whole elsewhere, it goes too
    assert scanner.redact(f"using {token}")[0] == "using [REDACTED:github-token]"


def test_mixed_quotes_and_named_splits_are_redacted_in_each_literal() -> None:
    value = rand(30)
    scanner = Scanner(known=[])
    new, kinds = scanner.redact(f"API_TOKEN = '{value[:12]}' + \"{value[12:]}\"\n", code=True)
    assert value[:12] not in new and value[12:] not in new and set(kinds) == {"Secret-named Value"}
    assert new.startswith("API_TOKEN = '[REDACTED:secret-named-value]' + \"")


@pytest.mark.parametrize("line", [
    "n_workers=2", "PATH=/usr/bin:/bin", "max_tokens=512", "token_type = 'bearer'", "tokenizer = load('bert')",
    "password = os.environ['DB_PASSWORD']", "api_key=API_KEY", "secret = self.secret", "TOKEN_FILE=/run/token",
    "Please set your password: the usual one", "{'token': 'Hello', 'logprob': -0.2}", "GITHUB_TOKEN=",
    "DB_PASSWORD=$DB_PASSWORD", "path = 'data/' + 'trips.parquet'", "label = 'part-' + 'one'",
    "token = None", "auth_token: str = field(default=None)",
])
def test_ordinary_lines_are_not_secrets(line: str) -> None:
    scanner = Scanner(known=[])
    assert scanner.redact(line) == (line, []) and scanner.redact(line, code=True) == (line, [])
