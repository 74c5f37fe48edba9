"""``folk report --runs DIR --out results/``: tables, figures and README from run results."""

from __future__ import annotations

import logging

from folk.report import build_report

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--runs",
        default="runs",
        help="directory searched for run directories (config.yaml) and "
        "bench.jsonl files (default: runs)",
    )
    parser.add_argument("--out", default="results", help="output directory (default: results)")
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
    )
    with_results = sum(t.has_results for t in report.tables)
    log.info(
        "%d tables (%d with results), %d figures -> %s",
        len(report.tables),
        with_results,
        len(report.figures),
        args.out,
    )
    return 0
