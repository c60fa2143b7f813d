"""The evaluation app of horse: ``python eval.py suite=NAME checkpoint=DIR`` (Hydra, configs in configs/eval/).

- ``eval.suites``: the suites (one module + one YAML each) and their registry.
- ``eval.runner``: runs a suite on a checkpoint, writes results.json, report.html and the model-card entry;
  with ``checkpoints=[A,B]`` evaluates each and compares them (``eval.compare``).
- ``eval.report``: results.json, the HTML reports and a Markdown summary for the README.
"""
