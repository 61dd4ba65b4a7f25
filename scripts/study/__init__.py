"""Reproduction studies: a study file (configs/study/) -> validated runs -> one report (scripts/study/cli.py)."""
