"""Evaluation metrics of horse: the shapes-AV analytic scorer (``horse.metrics.shapes_av``), confidence intervals
and paired tests (``horse.metrics.stats``), and the standard feature-based metrics in their own modules.

Nothing is imported here, so ``import horse.metrics.shapes_av`` stays light (numpy/scipy) for the trainer.
"""
