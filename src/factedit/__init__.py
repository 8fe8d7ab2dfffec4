"""factedit: locate where a transformer stores a fact (causal tracing) and rewrite it (ROME).

Library entry points::

    from factedit.models import load_model          # preset / hub id / directory / .gguf
    from factedit.spec import load_spec             # YAML spec or CounterFact / zsRE JSON
    from factedit.methods.rome import compute_rome  # -> WeightDelta (model untouched)
    from factedit.delta import WeightDelta          # apply() / revert() / save() / load()
"""

__version__ = "0.1.0"
