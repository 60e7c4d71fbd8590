"""rerank-server: a gRPC sidecar that scores (query, document) pairs with a cross-encoder.

Start it with the ``rerank-server`` command, or in-process with
:func:`rerank_server.main.create_server` followed by ``load()``.
"""
