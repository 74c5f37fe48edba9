"""``folk report --runs runs/EXP [--out results/EXP]``: tables, figures, README, DVC metrics
and curves from one experiment's runs."""

from __future__ import annotations

import logging

from folk.report import build_report

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--runs",
        default="runs",
        help="directory searched for the run directories (config.yaml) and bench.jsonl files "
        "of one experiment, e.g. runs/demo (default: runs)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default: results/<experiment.name> of the runs)",
    )
    parser.add_argument(
        "--readme",
        default=None,
        help="also replace the headline block of this README (the lines between "
        "<!-- headline:begin --> and <!-- headline:end -->) by the headline table and figure",
    )
    parser.add_argument(
        "--ref",
        default=None,
        help="published reference numbers CSV (default: the packaged "
        "folk/report/reference_numbers.csv)",
    )
    parser.add_argument(
        "--q",
        type=float,
        default=0.05,
        help="Com/RCom portion drawn in Fig. 1 and 4 (default 0.05)",
    )
    parser.add_argument(
        "--radius",
        type=float,
        default=16.0,
        help="MFM filter radius in px for Fig. 1 (default 16, at 224 px)",
    )
    parser.add_argument(
        "--photo-size",
        type=int,
        default=224,
        help="side of the photographs of Fig. 1 and 4 in px (default 224)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the figures' random masks")


def run(args) -> int:
    report = build_report(
        args.runs,
        args.out,
        ref_path=args.ref,
        q=args.q,
        radius=args.radius,
        seed=args.seed,
        photo_size=args.photo_size,
        readme=args.readme,
    )
    with_results = sum(t.has_results for t in report.tables)
    log.info(
        "%d tables (%d with results), %d figures -> %s",
        len(report.tables),
        with_results,
        len(report.figures),
        report.out_dir,
    )
    return 0
