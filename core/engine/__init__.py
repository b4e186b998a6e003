"""The engine: the method (explainer, sampling, words), its stored and resumable runs (pipeline, run_io, ray)
and the trainings it needs (train: translators; finetune: classifiers; rescore: a refit head on old runs)."""
