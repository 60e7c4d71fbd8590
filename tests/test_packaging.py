"""Packaging rules: generated code matches proto/, and the client stays free of torch."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_generated_code_matches_proto(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    generated = gen_proto.generate(tmp_path)
    committed_root = REPO / "client" / "_proto"
    assert generated, "protoc wrote no files"
    for path in generated:
        committed = committed_root / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing; run python scripts/gen_proto.py"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} differs from code generated from proto/; run python scripts/gen_proto.py")


def test_client_import_loads_no_torch_or_numpy():
    code = "import sys, rerank_client; print(sorted(m for m in ('torch', 'numpy', 'opensearchpy') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.strip() == "[]"


def test_client_source_never_imports_torch():
    for path in (REPO / "client").rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text, path
        assert "from torch" not in text, path


def test_base_install_has_no_torch_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "torch" not in base
    assert "sentence-transformers" not in base
    assert "torch" in " ".join(project["optional-dependencies"]["server"])
