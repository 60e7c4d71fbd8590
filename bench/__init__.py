"""Benchmarks of the rerank sidecar: serving speed against the GEMM limit and other rerankers.

Commands (run from the repository root):

- ``python -m bench.serving``: the full serving benchmark (see docs/benchmarks.md).
- ``python -m bench.fidelity``: ranking changes of int8 against fp32 on SciFact pages.
- ``python -m bench.tune``: in-process sweep of the batching settings.
"""
