"""s2sauth benchmarks: every hot path measured beside its anchors, printed as ratios.

Run ``python -m benchmarks`` from the repository root (``--quick`` for a smoke run).
"""
