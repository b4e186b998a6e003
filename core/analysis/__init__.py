"""Word statistics, spurious-term flags, groups and worst-group accuracy, read from the run store.

Every function here returns a DataFrame or a small dataclass (plots live in core.plots) and reads only
the store: nothing in this package loads a model.

    from core.analysis import word_shares, compare_word_sets, image_set, SpuriousTermScorer
    scorer = SpuriousTermScorer().fit(run)
    scorer.flags_for("landbird")           # words that pull landbirds toward another class
"""
from __future__ import annotations

from core.analysis.compare import (Divergence, ImageSet, compare_runs, compare_word_sets, divergence, image_set,
                                   word_totals)
from core.analysis.distributions import subset_word_shares, top_words, word_shares
from core.analysis.groups import (GroupAgreement, GroupInferrer, WorstGroupAccuracy, group_accuracy, group_agreement,
                                  train_group_counts_from_manifest, worst_group_accuracy)
from core.analysis.spurious import CoreWordList, SpuriousTermScorer, concept_words, flag_examples, spurious_share
from core.analysis.tables import RunTables, add_outcome, load_tables, select_images

__all__ = [
    "RunTables", "load_tables", "select_images", "add_outcome",
    "word_shares", "subset_word_shares", "top_words",
    "ImageSet", "image_set", "word_totals", "compare_word_sets", "Divergence", "divergence", "compare_runs",
    "SpuriousTermScorer", "CoreWordList", "concept_words", "flag_examples", "spurious_share",
    "group_accuracy", "worst_group_accuracy", "WorstGroupAccuracy", "train_group_counts_from_manifest",
    "GroupInferrer", "group_agreement", "GroupAgreement",
]
