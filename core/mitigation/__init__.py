"""Fixing a classifier with what its explanations revealed, and measuring the fix.

methods: the estimators (last-layer reweighting on inferred groups, MaskTune) and their evaluation;
pipeline: `mitigate(run_val, run_test, cfg)`, the whole detect-fix-compare loop on two runs.
"""
