"""vegalm: the Vega v2 recipe for encoder language models.

Self-evolution continued pretraining, SuperGLUE fine-tuning, prompt transfer with
knowledge distillation, official metrics and leaderboard submissions.
"""

__version__ = "0.1.0"
