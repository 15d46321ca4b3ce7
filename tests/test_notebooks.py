"""Every notebook in ``notebooks/`` runs top to bottom on tiny settings, and its pair is in sync.

Each notebook reads ``MAMMOSYNTH_NOTEBOOK_TINY=1`` to shrink itself to seconds and
``MAMMOSYNTH_NOTEBOOK_DIR`` for a working folder. Notebooks are jupytext-paired
(``.ipynb`` + ``.py`` percent format); the test executes the ``.ipynb`` with nbclient on the
``python3`` kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PAIRED = sorted(NOTEBOOKS.glob("*.ipynb"))


def _ensure_kernel() -> str:
    """The ``python3`` kernel, registered for this interpreter if Jupyter does not know it."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(user=True, kernel_name="python3")
    return "python3"


@pytest.mark.parametrize("path", PAIRED, ids=[p.stem for p in PAIRED])
def test_notebook_runs_on_tiny_settings(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MAMMOSYNTH_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("MAMMOSYNTH_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name=_ensure_kernel(),
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", PAIRED, ids=[p.stem for p in PAIRED])
def test_notebook_pair_is_in_sync(path: Path) -> None:
    import jupytext

    script = path.with_suffix(".py")
    assert script.exists(), f"{path.name} has no jupytext pair {script.name} (jupytext --set-formats ipynb,py:percent)"
    from_ipynb = jupytext.read(path)
    from_script = jupytext.read(script)

    def sources(nb) -> list[tuple[str, str]]:
        return [(c.cell_type, c.source.strip()) for c in nb.cells]

    assert sources(from_ipynb) == sources(from_script), (
        f"{path.name} and {script.name} differ: run `jupytext --sync {path}`")
