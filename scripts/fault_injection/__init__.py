"""Fault injection on real ``train.py`` processes (RELIABILITY.md).

    harness     launch, kill with real signals, read back (used by tests/test_reliability_*.py)
    campaign    many seeded random faults against an uninterrupted reference (orthogpt-fault-inject)
"""
