"""Test harness: a real OpenSearch node, a real sidecar process and tiny test models.

Search teams can reuse the pytest fixtures in their own suites with
``pytest_plugins = ["rerank_harness.pytest_plugin"]`` in a conftest.py.
"""
