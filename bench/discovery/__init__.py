"""The bias-discovery benchmark: does TExplain find planted biases, and does it beat the alternatives?

    python -m bench.discovery build            # the planted-bias worlds, deterministic (.assets/discovery/worlds)
    python -m bench.discovery run              # classifiers, explanations, metrics, baselines: a table and JSON

worlds: the suite of worlds (two classes of stamps, one planted cue each) and their builder;
metrics: hit@3, precision@k, AUROC and the aggregates with intervals, on plain arrays;
baselines: the alternatives scored the same way (nearest-caption lookup, a Domino-like mixture, random words);
run: one world through a tier (linear head or full fine-tune) and the whole suite's table.
See docs/discovery.md for the definitions and the latest results.
"""
