"""The package's public names, and what importing it loads."""

from __future__ import annotations

import subprocess
import sys

import rerank_client


def test_all_matches_public_names() -> None:
    public = {name for name in vars(rerank_client) if not name.startswith("_")}
    # Bound by "from __future__ import annotations", not an export.
    public -= {"annotations"}

    assert sorted(rerank_client.__all__) == sorted(public)


def test_all_names_resolve() -> None:
    missing = [name for name in rerank_client.__all__ if not hasattr(rerank_client, name)]

    assert missing == []


def test_import_loads_no_torch_numpy_or_opensearch() -> None:
    script = (
        "import sys, rerank_client\n"
        "print(','.join(sorted(name for name in ('torch', 'numpy', 'opensearchpy', 'aiohttp') "
        "if name in sys.modules)))\n"
    )

    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                               check=True)

    assert completed.stdout.strip() == ""
