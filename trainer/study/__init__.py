"""Reproduction studies: a study file (configs/study/) -> validated runs -> one report (trainer/study/cli.py)."""
