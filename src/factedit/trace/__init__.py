"""Causal tracing (ROME §2): where in the network does the model recall a fact?

    result = trace_fact(lm, "The Eiffel Tower is located in the city of", "The Eiffel Tower")
    agg = aggregate_trace(lm, load_known_facts(path), limit=50)
    layer, why = recommend_layer(lm, edit_requests)        # for `layers: auto`

Modules: ``noise`` (the corruption), ``patching`` (sites, clean run, the generic patch),
``engine`` (fast batched partial forward passes), ``reference`` (plain loop, the yardstick),
``fact`` / ``aggregate`` / ``recommend`` (the library calls), ``result`` (JSON),
``render`` (heatmaps: PNG, SVG, terminal).
"""

from factedit.trace.aggregate import AggregateResult, KnownFact, aggregate_trace, load_known_facts
from factedit.trace.fact import trace_fact
from factedit.trace.patching import KINDS
from factedit.trace.recommend import recommend_layer, save_aggregate
from factedit.trace.result import TraceResult

__all__ = [
    "KINDS",
    "AggregateResult",
    "KnownFact",
    "TraceResult",
    "aggregate_trace",
    "load_known_facts",
    "recommend_layer",
    "save_aggregate",
    "trace_fact",
]
