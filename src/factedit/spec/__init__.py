"""Edit specs: a YAML spec, CounterFact JSON or zsRE JSON -> validated, frozen dataclasses.

Everything here runs before any model is loaded (no torch / transformers imports). Every
problem is reported as one line that names the file, the edit (index and subject) and the
field or key path, and says what to fix, e.g.::

    facts.yaml: edit #2 (subject "Eiffel Tower"), field "target_new": must be a non-empty string
    facts.yaml:4:7: malformed YAML: mapping values are not allowed here
    counterfact.json: record #5 (case_id 123): missing field "requested_rewrite.target_new.str"

Validation goes on after a problem: every edit / record, every field, every unknown key, the
top-level settings and the duplicate / conflict checks are checked independently, and one
:class:`~factedit.errors.SpecError` lists them all (``facts.yaml: 3 problems``, then one line
each; a single problem is its one line). A check that needs a field that already failed is
skipped. Problems that make the rest unreadable (a missing file, malformed YAML / JSON, a top
level that is not a mapping or list, an unrecognised record format) are reported at once.

Edit and record indices are 0-based, like the key paths (``edit #2`` is ``edits[2]``) and
count from the start of the file, also when ``offset`` skips records.

YAML spec format (a JSON object with the same keys is accepted too)::

    model: gemma-3-270m         # optional: preset name, hub id, local dir or .gguf path
    method: rome                # optional; a name in factedit.methods.registry.METHODS
    layers: auto                # optional: "auto" or a list of layer indices, e.g. [6]
    seed: 0                     # optional: integer in [0, 2**32)
    hparams:                    # optional overrides: the fields of the method's HParams
      v_num_grad_steps: 20
      kl_factor: 0.0625
    edits:                      # required, non-empty
      - subject: The Eiffel Tower
        prompt: "{} is located in the city of"   # exactly one "{}" where the subject goes
        target_new: Rome                         # stored without surrounding whitespace
        target_true: Paris                       # optional
        paraphrases:                             # full prompts; "{}" is replaced by the subject
          - "The Eiffel Tower can be found in the city of"
          - "Where is {}? It is in the city of"
        neighborhood:                            # prompts about OTHER subjects
          - "The Louvre is located in the city of"       # expected answer: target_true
          - prompt: "Big Ben is located in the city of"  # or an explicit expected answer
            answer: London
        generation_prompts: ["{} is right across from"]  # optional; "{}" -> subject
        attribute_prompts: []                    # optional
        case_id: "eiffel-1"                      # optional (string or integer)
        relation_id: P131                        # optional

Each edit must name a subject, a prompt and a target_new. When any neighborhood item gives an
explicit ``answer``, ``neighborhood_answers`` holds one answer per neighborhood prompt (plain
strings get ``target_true``, which must then be present); otherwise it stays empty, meaning
"target_true" (CounterFact semantics). Two edits with the same subject and prompt are an
error: with the same target_new they are duplicates, with different ones they conflict.

Benchmark files are JSON lists of records, their layout detected from the first record:

- CounterFact, ROME layout (objects with ``requested_rewrite``);
- CounterFact, flattened EasyEdit / MEND layout for mass editing (objects with ``subject``,
  ``prompt``, ``target_new``, ``ground_truth``, ``locality_prompt`` and
  ``locality_ground_truth``, optional ``rephrase_prompt`` and ``case_id``; recognised by two
  of ``target_new``, ``ground_truth`` and ``locality_prompt``)::

      {"case_id": 0, "subject": "Danielle Darrieux",
       "prompt": "The mother tongue of Danielle Darrieux is",   # subject -> "{}"
       "target_new": "English", "ground_truth": "French",      # ground_truth: target_true
       "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
       "locality_prompt": "Michel Rocard is a native speaker of",
       "locality_ground_truth": "French"}                      # the neighbour's answer

  The prompt must contain the subject (case-sensitive); its first occurrence becomes "{}".
  The locality prompt is the one neighbour, ``locality_ground_truth`` its explicit answer;
- zsRE (objects with ``src`` / ``answers`` / ``loc``).

Each record is converted to the same :class:`EditRequest` and validated the same way
(duplicate / conflict checks included). Both CounterFact layouts give an :class:`EditSpec` of
kind ``"counterfact"`` (they have target_true, so every CounterFact metric applies), zsRE one
of kind ``"zsre"``. A ``.yaml`` / ``.yml`` file is always a spec; any other file (``.json``)
is a spec when it holds a mapping and a benchmark when it holds a list.

Modules: :mod:`~factedit.spec.requests` (the dataclasses), :mod:`~factedit.spec.problems`
(phrasing and collecting problems, typed getters), :mod:`~factedit.spec.checks` (checks every
reader shares), :mod:`~factedit.spec.yaml_edits` (one YAML edit),
:mod:`~factedit.spec.validation` (a spec mapping), :mod:`~factedit.spec.datasets` (benchmark
records) and :mod:`~factedit.spec.parsing` (files and text: :func:`load_spec`,
:func:`load_spec_text`).
"""

from __future__ import annotations

from factedit.spec.parsing import load_spec, load_spec_text
from factedit.spec.requests import EditRequest, EditSpec
from factedit.spec.validation import ARCH_KEYS, spec_from_dict

__all__ = [
    "ARCH_KEYS",
    "EditRequest",
    "EditSpec",
    "load_spec",
    "load_spec_text",
    "spec_from_dict",
]
