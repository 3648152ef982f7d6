"""The Colab notebooks run top to bottom (tiny settings, CPU) without a cell error, and the committed .ipynb files are
exactly what notebooks/build_notebooks.py writes. Needs nbclient, nbformat, ipykernel (the test extra)."""
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = ("quickstart.ipynb", "tpu.ipynb")
CELL_TIMEOUT = 600  # seconds per cell (tiny settings take seconds; the margin is for a loaded CI machine)


def test_notebooks_match_builder(tmp_path):
    sys.path.insert(0, NB_DIR)
    try:
        import build_notebooks
    finally:
        sys.path.remove(NB_DIR)
    build_notebooks.main(str(tmp_path))
    for name in NOTEBOOKS:
        built = (tmp_path / name).read_text()
        with open(os.path.join(NB_DIR, name)) as f:
            assert f.read() == built, f"notebooks/{name} is stale: run python notebooks/build_notebooks.py"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_tiny(name, monkeypatch):
    monkeypatch.setenv("JAXHSPACE_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # tpu.ipynb sets its own 4 fake devices in tiny mode
    nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": NB_DIR}})
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "tiny settings" in text
