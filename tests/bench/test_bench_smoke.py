"""The serving benchmark end to end on the tiny model, seconds long, plus its pure helpers.

No timing is asserted: CI machines differ. The run must finish, print its
tables and write its JSON result.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# bench/ is not an installed package: it runs from the repository root, as its docs show.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import report  # noqa: E402
from bench.limits import ModelShape  # noqa: E402
from bench.workload import Bm25Index, Workload, document_text  # noqa: E402
from rerank_harness.scifact import Document  # noqa: E402


@pytest.mark.slow
def test_serving_benchmark_smoke_run(tiny_model_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))
    output = tmp_path / "result.json"
    plot = tmp_path / "latency.png"
    command = [sys.executable, "-m", "bench.serving", "--model", str(model_dir), "--page-sizes", "10,50",
               "--clients", "1,2", "--min-pages", "2", "--pages-per-client", "1", "--mixed-pages", "4",
               "--mixed-clients", "2", "--gemm-seconds", "0.05", "--gemm-sizes", "128", "--no-progress",
               "--output", str(output), "--plot", str(plot)]

    finished = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)

    assert finished.returncode == 0, finished.stderr[-3000:]
    for heading in ("## Latency per page", "## Mixed-workload throughput", "## Targets"):
        assert heading in finished.stdout
    assert "skipped: no --infinity-venv given" in finished.stdout
    result = json.loads(output.read_text())
    assert set(result["backends"]) == {"torch", "onnx"}
    assert result["gemm"]["peak_fp32_gflops"] > 0
    assert len(result["baseline"]["cells"]) == 2
    assert len(result["backends"]["onnx"]["cells"]) == 4
    assert all(cell["errors"] == 0 for cell in result["backends"]["onnx"]["cells"])
    assert result["backends"]["onnx"]["max_abs_diff_vs_baseline"] <= 1e-5
    assert result["backends"]["torch"]["max_abs_diff_vs_baseline"] <= 1e-5
    assert result["infinity"] == {"skipped": "no --infinity-venv given"}
    if _has_matplotlib():
        assert plot.stat().st_size > 0
    else:
        assert "plot skipped: matplotlib is not installed" in finished.stdout


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_bm25_ranks_title_match_first():
    documents = [Document("1", "Kettle descaling", "Vinegar removes limescale."),
                 Document("2", "Museum hours", "The east wing reopens."),
                 Document("3", "Hard water", "Scale builds up in a kettle.")]

    index = Bm25Index(documents)

    assert index.search("descaling a kettle", 3) == [0, 2, 1]


def test_document_text_cuts_words():
    document = Document("1", "Kettle descaling", "Vinegar removes limescale from old kettles.")

    assert document_text(document, 4) == "Kettle descaling Vinegar removes"
    assert document_text(document, 0) == "Kettle descaling Vinegar removes limescale from old kettles."


def test_workload_pages_have_requested_size():
    workload = Workload(document_words=10, seed=3)

    pages = workload.pages(2, 10)
    mixed = workload.mixed(6, [10, 50])

    assert [page.size for page in pages] == [10, 10]
    assert sorted(page.size for page in mixed) == [10, 10, 10, 50, 50, 50]
    assert pages[0].query != pages[1].query
    assert all(len(text.split()) <= 10 for text in pages[0].documents)


def test_pair_flops_formula():
    shape = ModelShape(layers=6, hidden_size=384, encoder_parameters=10_646_784)

    assert shape.pair_flops(52) == 2 * 10_646_784 * 52 + 4 * 6 * 384 * 52**2


def test_format_table_aligns_numbers_right():
    table = report.format_table(["system", "pairs/s"], [["onnx", 112.5], ["torch", 9.25]])

    assert table.splitlines() == [
        "| system | pairs/s |",
        "|--------|---------|",
        "| onnx   |     112 |",
        "| torch  |    9.25 |",
    ]
