"""Ranking metrics through ir-measures, which runs trec_eval's code via pytrec_eval.

Runs are ``{query_id: {doc_id: score}}`` and qrels ``{query_id: {doc_id: relevance}}``,
the pytrec_eval layout that BEIR uses. trec_eval orders equal scores by doc id,
not by the order a system returned them, so :func:`ranking_to_run` turns a ranked
list into strictly decreasing scores first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

# Display name -> ir-measures name. MRR@10 is trec_eval's recip_rank cut at 10.
MEASURE_NAMES: dict[str, str] = {"nDCG@10": "nDCG@10", "MRR@10": "RR@10", "Recall@100": "R@100"}


def ranking_to_run(rankings: Mapping[str, Sequence[str]]) -> Run:
    """Turn ranked doc ids per query into scores that keep that exact order under trec_eval.

    Args:
        rankings: Doc ids per query, best first. A doc id listed twice keeps its
            first (best) position.

    Example::

        ranking_to_run({"q1": ["d2", "d1"]})  # {"q1": {"d2": 2.0, "d1": 1.0}}
    """
    run: Run = {}
    for query_id, doc_ids in rankings.items():
        scores: dict[str, float] = {}
        for position, doc_id in enumerate(doc_ids):
            scores.setdefault(doc_id, float(len(doc_ids) - position))
        run[query_id] = scores
    return run


def evaluate_run(qrels: Qrels, run: Run, *, per_query: bool = False) -> dict[str, float] | dict[str, dict[str, float]]:
    """Compute nDCG@10, MRR@10 and Recall@100 of ``run``, averaged over the judged queries.

    Queries judged in ``qrels`` but missing from ``run`` count as 0 for every
    measure, so a query with no hits lowers the mean instead of leaving it.
    Queries in ``run`` without judgments are ignored.

    Args:
        qrels: Relevance judgments; relevance above 0 is relevant.
        run: Scores per query and doc id; higher ranks first.
        per_query: Return ``{query_id: {measure: value}}`` instead of the means.

    Returns:
        ``{"nDCG@10": ..., "MRR@10": ..., "Recall@100": ...}`` (means), or the
        same per query.
    """
    import ir_measures

    judged = {query_id: dict(docs) for query_id, docs in qrels.items()}
    measures = {name: ir_measures.parse_measure(spec) for name, spec in MEASURE_NAMES.items()}
    by_measure = {str(measure): name for name, measure in measures.items()}
    values: dict[str, dict[str, float]] = {query_id: dict.fromkeys(MEASURE_NAMES, 0.0) for query_id in judged}
    filtered = {query_id: dict(scores) for query_id, scores in run.items() if query_id in judged and scores}
    if filtered:
        for metric in ir_measures.iter_calc(list(measures.values()), judged, filtered):
            values[metric.query_id][by_measure[str(metric.measure)]] = float(metric.value)
    if per_query:
        return values
    count = max(1, len(values))
    return {name: sum(row[name] for row in values.values()) / count for name in MEASURE_NAMES}
