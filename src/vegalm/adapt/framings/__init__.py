"""Per-framing encoders: ``text`` (pair, COPA, MultiRC, ReCoRD) and ``spans`` (WiC, WSC)."""
