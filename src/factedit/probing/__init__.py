"""Probing: what each layer's representation of a span makes linearly decodable.

- :mod:`~factedit.probing.data`: JSONL examples (text, span, label), checked line by line;
- :mod:`~factedit.probing.tasks`: tasks from CounterFact / known-facts files, per relation;
- :mod:`~factedit.probing.activations`: all layers from one forward pass per batch, cached;
- :mod:`~factedit.probing.train`: probes on a split by span string, control task, selectivity;
- :mod:`~factedit.probing.mix`: Tenney's scalar mix (expected layer) and cumulative gain;
- :mod:`~factedit.probing.lens`: the logit lens;
- :mod:`~factedit.probing.edited`: probes of the unedited model applied to an edited one;
- :mod:`~factedit.probing.report` / :mod:`~factedit.probing.plot`: JSON, terminal, figures;
- :mod:`~factedit.probing.run`: one ``factedit probe`` run.

This package's ``__init__`` imports nothing heavy; the modules import torch and numpy.
"""
