"""The generated notebook runs top to bottom in a real Jupyter kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.commands.report import notebook as notebook_cmd
from tests.test_report import make_run

pytestmark = pytest.mark.requires("root", "cgroup", "compiler", "host", "namespaces")


def test_notebook_executes_with_a_real_kernel(tmp_path_factory, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    run = make_run(tmp_path_factory)
    out = tmp_path / "analysis.ipynb"
    res = CliRunner().invoke(notebook_cmd, [str(run), "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    nb = nbformat.read(str(out), as_version=4)
    # the kernel imports the bench under test, not whatever copy is installed
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs
    )
    assert "getppid" in text or "null" in text  # the summary table came out
    assert "ratio" in text


def test_generating_needs_only_the_core_dependencies(tmp_path_factory, tmp_path):
    """nbformat is a core dependency; Jupyter (nbclient, ipykernel) only runs the notebook."""
    import subprocess
    import sys

    import nbformat

    run = make_run(tmp_path_factory)
    code = (
        "import sys; sys.modules.update(nbclient=None, ipykernel=None, jupyter_client=None)\n"
        "from bench.cli import main\n"
        "sys.argv = ['isobench', 'notebook', sys.argv[1], '-o', '-']; main()"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(run)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    nb = nbformat.reads(res.stdout, as_version=4)
    nbformat.validate(nb)
    assert str(run.resolve()) in "".join(c.source for c in nb.cells)
