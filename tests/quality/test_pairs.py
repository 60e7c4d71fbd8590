"""Reading labelled pair files for rerank-train."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rerank_quality.pairs import Pair, PairFileError, read_pairs, write_pairs


def test_read_pairs_tsv(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("query\tdocument\tlabel\nkettle\tUse vinegar.\t1\nkettle\tThe museum.\t0\n", encoding="utf-8")

    assert read_pairs(path) == [Pair("kettle", "Use vinegar.", 1.0), Pair("kettle", "The museum.", 0.0)]


def test_read_pairs_csv_sentence_columns(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('sentence_0,sentence_1,label\nkettle,"Vinegar, then rinse.",0.75\n', encoding="utf-8")

    assert read_pairs(path) == [Pair("kettle", "Vinegar, then rinse.", 0.75)]


def test_read_pairs_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    pairs = [Pair("q", "d", 0.5), Pair("q", "e", 1.0)]
    write_pairs(path, pairs)

    assert read_pairs(path) == pairs


def test_read_pairs_rejects_label_outside_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("query\tdocument\tlabel\nq\td\t2\n", encoding="utf-8")

    with pytest.raises(PairFileError, match=re.escape(f"{path}:2: label '2' is outside [0, 1]")):
        read_pairs(path)


def test_read_pairs_rejects_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"question": "q", "answer": "a", "label": 1}\n', encoding="utf-8")

    with pytest.raises(PairFileError, match="expected the columns query, document, label"):
        read_pairs(path)


def test_read_pairs_rejects_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"")

    with pytest.raises(PairFileError, match=re.escape("unknown pair file type '.parquet'")):
        read_pairs(path)
