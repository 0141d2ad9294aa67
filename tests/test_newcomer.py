"""What a new user hits in the first hour (issue 21): the install has what `cumulo run` needs, and a
cumulo error in a notebook reads as its message, not as fifteen frames of cumulo's internals."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


# -- the install (items 1 and 19) ------------------------------------------------------------------


def test_the_core_install_has_what_cumulo_run_and_the_gallery_need() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    assert {"nbformat", "nbclient", "ipykernel"} <= core
    assert "jupyterlab" in _requirement_names(project["optional-dependencies"]["lab"])
    assert "pip install 'cumulo[lab]'" in (ROOT / "README.md").read_text()


def test_no_dependency_is_declared_that_nothing_imports() -> None:
    """jsonschema was declared but config validation reads the schema itself (cumulo.config)."""
    core = _requirement_names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert "jsonschema" not in core
    imported: set[str] = set()
    for path in (ROOT / "sdk" / "cumulo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert "jsonschema" not in imported


def test_a_missing_notebook_package_is_a_cumulo_error_naming_the_pip_line(tmp_path: Path) -> None:
    """`cumulo run` in an environment without nbformat: one line saying what to install, no traceback."""
    path = tmp_path / "tiny.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1 + 1")]), str(path))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["nbformat"] = None  # as if it were not installed: `import nbformat` raises ImportError
        from cumulo.cli import main
        sys.exit(main(["run", {str(path)!r}]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "ModuleNotFoundError" not in out.stderr
    # nbclient imports nbformat, so it cannot be imported either
    assert out.stderr.startswith("cumulo run: nbformat and nbclient cannot be imported in this environment")
    assert "pip install nbformat nbclient ipykernel" in out.stderr and "pip install --upgrade cumulo" in out.stderr
    assert not (tmp_path / "tiny.run.ipynb").exists()


def test_the_missing_package_error_is_a_missing_dependency(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["nbclient"] = None
        import cumulo.run
        from cumulo.exceptions import CumuloError, MissingDependency
        try:
            cumulo.run.run_notebook("whatever.ipynb")
        except MissingDependency as exc:
            print(isinstance(exc, CumuloError), exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.stdout.startswith("True nbclient cannot be imported"), out.stderr
    assert "pip install nbclient ipykernel" in out.stdout


# -- a cumulo error in a notebook (item 7) ----------------------------------------------------------


def _errors(nb: nbformat.NotebookNode) -> list[dict]:
    found = []
    for cell in nb.cells:
        for out in cell.outputs:
            if out.output_type == "error":
                found.append({"ename": out.ename, "cell": cell.source,
                              "text": ANSI.sub("", "\n".join(out.traceback)), "entries": len(out.traceback)})
    return found


def test_a_cumulo_error_in_a_kernel_shows_its_message_under_the_users_frame(tmp_path: Path) -> None:
    """In a real kernel: brief by default (message, the cell, the user's own function), whole with cumulo.debug."""
    nb = new_notebook(cells=[
        new_code_cell("import cumulo, dask"),
        new_code_cell("cumulo.connect(budgett=5)"),
        new_code_cell("def attach():\n    return cumulo.connect('tcp://127.0.0.1:1')\nattach()"),
        new_code_cell("1 / 0"),  # not cumulo's: IPython's usual traceback
        new_code_cell("dask.config.set({'cumulo.debug': True})\ncumulo.connect(budgett=5)"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    typo, refused, zero, debug = _errors(nb)

    assert typo["ename"] == "SpecError"
    assert "SpecError: connect() got an unknown argument budgett= (did you mean 'budget'?)" in typo["text"]
    assert "----> 1 cumulo.connect(budgett=5)" in typo["text"]  # the user's own line
    assert "cumulo/" not in typo["text"] and "site-packages" not in typo["text"]
    assert "cumulo.debug: true" in typo["text"] and typo["entries"] <= 5

    assert refused["ename"] == "ConnectError"
    assert "nothing listens at tcp://127.0.0.1:1" in refused["text"]
    assert "in attach()" in refused["text"] and "----> 3 attach()" in refused["text"]  # the user's helper too
    assert "cumulo/" not in refused["text"] and "concurrent" not in refused["text"]
    assert "asyncio" not in refused["text"] and refused["entries"] <= 6

    assert zero["ename"] == "ZeroDivisionError" and "cumulo.debug" not in zero["text"]

    assert debug["ename"] == "SpecError" and "did you mean 'budget'" in debug["text"]
    assert "cumulo/cluster.py" in debug["text"] and "cumulo/spec.py" in debug["text"]  # the whole traceback
    assert "cumulo.debug: true shows" not in debug["text"]
