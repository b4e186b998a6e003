"""`texplain mitigate RUN_VAL`: fix a classifier's reliance on flagged words (DFR, MaskTune), and measure it.

    texplain mitigate checkpoints/runs/demo-erm-val --test-run checkpoints/runs/demo-erm-test --method all

Reads the validation run's explanations, flags spurious words, infers groups from them, fixes the classifier
and scores every fix on the test split with its TRUE groups; the results go to mitigation.json in the test
run (for a shipped demo run: runs/.shipped/<run>/, so using the demo never changes the repository), and each
refit classifier gets a run of its own on the test images (runs/<test run>-dfr-<groups>).
"""
from __future__ import annotations

import argparse

from core.cli.options import default
from core.mitigation.config import BALANCES, GROUP_CHOICES, METHODS, PENALTIES, MitigationConfig


def add_parser(subparsers) -> None:
    doc = __doc__.splitlines()
    ap = subparsers.add_parser("mitigate", help="fix a classifier (last-layer reweighting, MaskTune): "
                                                "RUN_VAL --test-run RUN_TEST", description=doc[0],
                               epilog="\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_val", metavar="RUN_VAL", help="run folder of the validation split (explanations)")
    ap.add_argument("--test-run", default=None, help="run folder of the test split (mitigation.json goes there); "
                                                     "without it, the dataset's test split is read directly")
    ap.add_argument("--method", choices=METHODS, default=default(MitigationConfig, "method"),
                    help="dfr: refit the last layer on the val images; masktune: GradCAM-mask the training images "
                         "and fine-tune; all: both (default %(default)s)")
    ap.add_argument("--groups", choices=GROUP_CHOICES, default=default(MitigationConfig, "groups"),
                    help="groups DFR balances over: inferred from the explanations, the dataset's true groups "
                         "(a reference), class (classes only: a control showing what the groups add); both = "
                         "inferred + true, all = the three (MaskTune uses none; default %(default)s)")
    ap.add_argument("--classifier", default=None, help="classifier checkpoint folder (default: the run's, found "
                                                       "from its manifest)")
    ap.add_argument("--dataset", default=None, help="dataset folder (default: the run's)")
    ap.add_argument("--out", default=None, help="folder for the new classifiers, each in OUT/<method>-<groups> "
                                                "(default: runs/classifiers/<classifier name>)")
    ap.add_argument("--no-save", action="store_true", help="evaluate only; save no checkpoint")
    ap.add_argument("--no-runs", action="store_true",
                    help="do not write a run of each refit classifier on the test run's images (by default one is "
                         "written to runs/<test run>-dfr-<groups>, reusing the test run's explanations: a refit last "
                         "layer keeps the features, so the sentences are the same)")
    ap.add_argument("--penalty", choices=PENALTIES, default=default(MitigationConfig, "penalty"),
                    help="DFR: penalty of the last layer (default %(default)s)")
    ap.add_argument("--balance", choices=BALANCES, default=default(MitigationConfig, "balance"),
                    help="DFR: group-balanced subsamples (as in DFR), group weights, or auto: subsamples unless the "
                         "smallest group has fewer than 20 images (default %(default)s)")
    ap.add_argument("--masktune-epochs", type=int, default=default(MitigationConfig, "masktune_epochs"),
                    help="MaskTune's fine-tuning epochs (default %(default)s)")
    ap.add_argument("--masktune-lr", type=float, default=default(MitigationConfig, "masktune_lr"),
                    help="MaskTune keeps the ERM fine-tuning settings (default lr %(default)s)")
    ap.add_argument("--seed", type=int, default=default(MitigationConfig, "seed"),
                    help="seed of the DFR subsamples and MaskTune's batches (default %(default)s)")
    ap.add_argument("--into-shipped", action="store_true", help=argparse.SUPPRESS)  # demo rebuilds only: write
    # mitigation.json into shipped run folders (checkpoints/) instead of the user's overlay
    ap.set_defaults(func=run)


def run(args) -> int:
    from core.mitigation.methods import results_table
    from core.mitigation.pipeline import mitigate
    from core.models.registry import relative_to_repo

    cfg = MitigationConfig(method=args.method, groups=args.groups, penalty=args.penalty, balance=args.balance,
                           masktune_epochs=args.masktune_epochs, masktune_lr=args.masktune_lr, seed=args.seed,
                           save=not args.no_save, write_runs=not args.no_runs)
    outcome = mitigate(args.run_val, args.test_run, cfg, classifier=args.classifier, dataset=args.dataset,
                       out=args.out, into_shipped=args.into_shipped)
    results = outcome.results
    table = results_table(results)
    for col in ("worst_group_before", "worst_group_after", "average_before", "average_after"):
        table[col] = table[col].map(lambda v: f"{v:.3f}")
    print(f"\ntest split, true groups ({results[0].n_images if results else 0} images):")
    print(table.to_string(index=False))
    for r in results:
        per = r.table()
        ci = r.intervals.get("worst_group_change")
        print(f"\n{r.method} ({r.groups} groups): worst group {r.worst_group_change:+.3f}"
              + (f" (95% interval {ci[0]:+.3f} to {ci[1]:+.3f}, paired bootstrap)" if ci else "") + ", per group:")
        print(per.assign(before=per["before"].map("{:.3f}".format), after=per["after"].map("{:.3f}".format),
                         change=per["change"].map("{:+.3f}".format)).to_string(index=False))
        if r.warning:
            print(f"warning: {r.warning}")
    print("\nwrote " + ", ".join(relative_to_repo(p) for p in [*outcome.written, *outcome.new_runs])
          + f" in {outcome.seconds:.0f} s", flush=True)
    return 0
