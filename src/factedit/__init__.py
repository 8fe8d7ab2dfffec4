"""factedit: locate where a transformer stores a fact (causal tracing) and rewrite it (ROME).

Library entry points::

    from factedit.models import load_model          # preset / hub id / directory / .gguf
    from factedit.spec import load_spec             # YAML spec or CounterFact / zsRE JSON
    from factedit.session import EditSession        # compute / apply / revert / save / load
    from factedit.methods.registry import METHODS   # the methods by name, with their hparams
    from factedit.delta import WeightDelta          # ΔW = left @ right.T, one weight
    from factedit import Patch                      # a saved set of edits: load/apply/revert
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``factedit.Patch`` on first use (it imports torch; ``import factedit`` must not)."""
    if name == "Patch":
        from factedit.patch import Patch

        return Patch
    raise AttributeError(f"module 'factedit' has no attribute {name!r}")
