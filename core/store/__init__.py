"""The run store: one folder per explanation run (core.store.run), and every lookup of runs (core.store.catalog)."""
from core.errors import RunLockedError, RunMismatchError, RunStoreError
from core.store.catalog import RunEntry, discover_runs, list_runs, resolve_run, run_roots
from core.store.run import (CAUSAL_FILE, COLUMNS, IMAGE_COLUMNS, LOCK_FILE, MANIFEST, MITIGATION_FILE,
                            SENTENCE_COLUMNS, SHIPPED_OVERLAY, TABLES, WORD_COLUMNS, Run, RunHealth,
                            dataset_fingerprint, dataset_key, describe_gain, describe_sample, describe_sentences,
                            portable_root, process_alive, read_mitigation_records, resolve_image_path, run_files,
                            user_file)

__all__ = ["CAUSAL_FILE", "COLUMNS", "IMAGE_COLUMNS", "LOCK_FILE", "MANIFEST", "MITIGATION_FILE", "SENTENCE_COLUMNS",
           "SHIPPED_OVERLAY", "TABLES", "WORD_COLUMNS", "Run", "RunEntry", "RunHealth", "RunLockedError",
           "RunMismatchError", "RunStoreError", "dataset_fingerprint", "dataset_key", "describe_gain",
           "describe_sample", "describe_sentences", "discover_runs", "list_runs", "portable_root", "process_alive",
           "read_mitigation_records", "resolve_image_path", "resolve_run", "run_files", "run_roots", "user_file"]
