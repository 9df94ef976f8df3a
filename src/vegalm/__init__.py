"""vegalm: the Vega v2 recipe for encoder language models.

Self-evolution continued pretraining, SuperGLUE fine-tuning, prompt transfer with
knowledge distillation, official metrics and leaderboard submissions.
"""

__version__ = "0.1.0"


def load_run(path, **kw):  # noqa: ANN001, ANN201 - thin lazy re-export (importing vegalm stays cheap)
    """Load a saved run for prediction: ``vegalm.load_run("runs/rte").predict("new.jsonl")``.

    See :func:`vegalm.adapt.inference.load_run`."""
    from vegalm.adapt.inference import load_run as _load_run

    return _load_run(path, **kw)
