"""The notebooks run top to bottom against a live service, as CI runs them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import service_token

if TYPE_CHECKING:
    from app.runtime import Runtime

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FIGURES = {
    "01_exploring_memories.ipynb": "memory-timeline.png",
    "02_embedding_map.ipynb": "embedding-map.png",
    "03_retrieval_debugging.ipynb": "retrieval-debugging.png",
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs(
    name: str,
    live_server: str,
    runtime: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENGRAM_URL", live_server)
    monkeypatch.setenv("ENGRAM_TOKEN", service_token())
    monkeypatch.setenv("ENGRAM_FIGURES", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("ENGRAM_LOCOMO", raising=False)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "notebooks are committed without outputs"
    )

    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    ).execute()

    assert (tmp_path / FIGURES[name]).stat().st_size > 1000
    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert errors == []
