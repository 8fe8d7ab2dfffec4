"""Edit patches: the deltas of a set of edits with their provenance, in one checked file.

from factedit.patch import Patch
patch = Patch.load("edits.patch.safetensors")
with patch.applied(model): ...
"""

from factedit.patch.core import Patch, SavedState

__all__ = ["Patch", "SavedState"]
