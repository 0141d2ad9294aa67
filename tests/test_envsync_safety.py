"""What environment sync may do on this machine and leave on a host: no ignored files or secrets in local
wheels, no source build while resolving, no half-built venv after a failed install, private venvs.

Everything here runs offline (UV_OFFLINE): the packages are built by tiny in-tree build backends
and installed from a local wheel folder, with the real uv and git.
"""

from __future__ import annotations

import secrets
import stat
import string
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from cumulo import envsync
from cumulo.exceptions import EnvironmentSyncError

pytestmark = pytest.mark.skipif(envsync.uv_path() is None, reason="needs uv (the ssh extra)")
pytest.importorskip("detect_secrets")

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

#: A PEP 517 backend that packs every file under the package folder, as setuptools does with
#: ``package-data = {"*": ["*", ".*"]}`` (the layout that shipped a .env in the report).
TAKE_EVERYTHING = textwrap.dedent('''
    import os, zipfile
    NAME, VERSION = "leaky", "0.1"

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        name = f"{NAME}-{VERSION}-py3-none-any.whl"
        info = f"{NAME}-{VERSION}.dist-info"
        with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
            for root, _, files in os.walk(NAME):
                for f in files:
                    zf.write(os.path.join(root, f))
            zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n")
            zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
            zf.writestr(f"{info}/RECORD", "")
        return name
''')


def rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_OFFLINE", "1")


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                   check=True, capture_output=True)


def leaky_package(tmp_path: Path, files: dict[str, str], *, ignore: tuple[str, ...] = ()) -> Path:
    """A git repository holding package ``leaky`` with ``files`` (relative paths) and a .gitignore."""
    src = tmp_path / "leaky-src"
    (src / "leaky").mkdir(parents=True)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "leaky"\nversion = "0.1"\n')
    (src / "backend.py").write_text(TAKE_EVERYTHING)
    (src / "leaky" / "__init__.py").write_text("def answer():\n    return 42\n")
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    (src / ".gitignore").write_text("".join(f"{p}\n" for p in ignore))
    _git(src, "init", "-q")
    _git(src, "add", "pyproject.toml", "backend.py", ".gitignore", "leaky/__init__.py")
    _git(src, "commit", "-q", "-m", "init")
    return src


def build(src: Path, out: Path) -> list[str]:
    lock = envsync.Lock(python=PYTHON, local=[envsync.Local("leaky", "0.1", str(src))])
    wheels = envsync.build_wheels(lock, out)
    assert len(wheels) == 1 and lock.wheel_digests
    return zipfile.ZipFile(wheels[0]).namelist()


def test_a_local_wheel_leaves_out_what_git_ignores(tmp_path: Path) -> None:
    secret = "AWS_SECRET_ACCESS_KEY=" + rand(40)
    src = leaky_package(tmp_path, {"leaky/.env": secret + "\n", "leaky/credentials.json": '{"k": "%s"}' % rand(30),
                                   "leaky/config/credentials.json": "{}", "leaky/table.csv": "a,b\n1,2\n"},
                        ignore=(".env", "credentials.json", "__pycache__/"))
    names = build(src, tmp_path / "wheels")
    assert "leaky/__init__.py" in names
    assert "leaky/table.csv" in names  # untracked but not ignored: part of the package as it is
    assert not [n for n in names if n.endswith((".env", "credentials.json"))], names
    assert (src / "leaky" / ".env").read_text() == secret + "\n"  # the package folder itself is untouched


def test_outside_git_every_file_is_built_but_a_secret_file_name_is_refused(tmp_path: Path) -> None:
    src = leaky_package(tmp_path, {"leaky/.env": "DEBUG=1\n", "leaky/.env.example": "TOKEN=\n"})
    subprocess.run(["rm", "-rf", str(src / ".git")], check=True)
    with pytest.raises(EnvironmentSyncError) as info:
        build(src, tmp_path / "wheels")
    text = str(info.value)
    assert "leaky: leaky/.env (a file name that holds secrets)" in text and "nothing was sent" in text
    assert ".env.example" not in text and "cumulo.env.exclude" in text


def test_a_secret_in_a_shipped_file_refuses_with_the_file_and_kind_never_the_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    aws = "AK" + "IA" + rand(16, string.ascii_uppercase + string.digits)
    github = "gh" + "p_" + rand(36)
    token = rand(28)
    monkeypatch.setenv("ACME_SERVICE_TOKEN", token)  # a configured secret, found by value
    src = leaky_package(tmp_path, {"leaky/settings.py": f'REGION = "us-east-1"\nKEY_ID = "{aws}"\n',
                                   "leaky/deploy.json": '{"registry_token": "%s"}\n' % github,
                                   "leaky/notes.txt": f"the service answers to {token}\n"})
    with pytest.raises(EnvironmentSyncError) as info:
        build(src, tmp_path / "wheels")
    text = str(info.value)
    assert "leaky/settings.py (AWS Access Key)" in text
    assert "leaky/deploy.json (" in text and "GitHub Token" in text
    assert "leaky/notes.txt (configured secret (environment variable ACME_SERVICE_TOKEN))" in text
    assert "leaky/__init__.py" not in text
    for value in (aws, github, token):
        assert value not in text


def test_cumulos_own_sources_ship_without_a_false_alarm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cumulo's code names secrets everywhere (detectors, credential errors): its wheel must still ship, also
    where a cumulo setting with a secret-sounding name is set in the environment (its value is a mode, which
    cumulo's own sources spell: CI's wheel was refused for 'static-token' in providers/azure)."""
    import cumulo

    monkeypatch.setenv("DASK_CUMULO__AZURE__CREDENTIAL", "static-token")

    package = Path(cumulo.__file__).parent
    wheel = tmp_path / "cumulo-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in sorted(package.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                zf.write(f, f"cumulo/{f.relative_to(package)}")
    lock = envsync.Lock(python=PYTHON, local=[envsync.Local("cumulo", "0.0.0", str(wheel))])
    assert envsync.build_wheels(lock, tmp_path / "out") == [wheel]


def _sdist_that_runs_code(tmp_path: Path, marker: Path) -> Path:
    """An sdist whose build backend writes ``marker`` when run (its dependencies are dynamic, so a
    resolver must build it to learn them)."""
    root = tmp_path / "sdist" / "evilpkg-0.1"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "evil_backend"\nbackend-path = ["."]\n'
        '[project]\nname = "evilpkg"\ndynamic = ["version", "dependencies"]\n')
    (root / "evil_backend.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "def prepare_metadata_for_build_wheel(d, config_settings=None):\n"
        "    p = pathlib.Path(d) / 'evilpkg-0.1.dist-info'\n    p.mkdir()\n"
        "    (p / 'METADATA').write_text('Metadata-Version: 2.1\\nName: evilpkg\\nVersion: 0.1\\n')\n"
        "    return p.name\n")
    archive = tmp_path / "evilpkg-0.1.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(root.parent), root.name], check=True)
    return archive


def test_resolving_never_builds_a_source_distribution_here(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "MARKER"
    archive = _sdist_that_runs_code(tmp_path, marker)
    lock = envsync.Lock(python=PYTHON, pins=[f"evilpkg @ {archive.as_uri()}"])
    with caplog.at_level("WARNING", logger="cumulo"):
        envsync.check_resolvable(lock)
    assert not marker.exists(), "resolving ran the sdist's build code on this machine"
    assert "'evilpkg' has no wheel for Linux x86-64 and is not built here" in caplog.text


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel of module ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}.py", "ANSWER = 42\n")
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def _install(lock: envsync.Lock, venv: Path, wheels_dir: Path) -> subprocess.CompletedProcess[str]:
    wheels_dir.mkdir(parents=True, exist_ok=True)
    (wheels_dir / "requirements.txt").write_text(lock.requirements_text())
    script = envsync.install_script(lock, venv=str(venv), python=sys.executable, uv=str(envsync.uv_path()),
                                    wheels_dir=str(wheels_dir), timeout_s=60)
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120)


def test_a_failed_build_leaves_no_half_built_venv_and_the_next_attempt_builds(tmp_path: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    lock = envsync.Lock(python=PYTHON, pins=["cumulo_tinyzz==0.1"], find_links=[str(links)])
    venv = tmp_path / "home" / "envs" / lock.digest
    failed = _install(lock, venv, tmp_path / "staging")
    assert failed.returncode != 0 and "cumulo-tinyzz" in failed.stderr
    assert not venv.exists(), "a failed build left a half-built venv behind"
    _wheel(links, "cumulo_tinyzz", "0.1")  # the index has it now
    done = _install(lock, venv, tmp_path / "staging")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cumulo-env-built" and (venv / ".cumulo-ready").exists()
    answer = subprocess.run([str(venv / "bin" / "python"), "-c", "import cumulo_tinyzz; print(cumulo_tinyzz.ANSWER)"],
                            capture_output=True, text=True)
    assert answer.stdout.strip() == "42", answer.stderr
    again = _install(lock, venv, tmp_path / "staging")
    assert again.stdout.strip() == "cumulo-env-reused"


def test_the_venv_is_private_whatever_the_umask(tmp_path: Path) -> None:
    links = tmp_path / "links"
    _wheel(links, "cumulo_tinyzz", "0.1")
    lock = envsync.Lock(python=PYTHON, pins=["cumulo_tinyzz==0.1"], find_links=[str(links)])
    root = tmp_path / "home" / "envs"
    root.mkdir(parents=True, mode=0o755)
    root.chmod(0o755)  # made earlier under a default umask
    venv = root / lock.digest
    import os

    old = os.umask(0o022)
    try:
        done = _install(lock, venv, tmp_path / "staging")
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    shared = [p for p in (venv, *venv.rglob("*")) if not p.is_symlink() and p.stat().st_mode & 0o077]
    assert not shared, f"readable by others: {shared[:5]}"
