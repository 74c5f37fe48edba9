"""``results/README.md``: what each table and figure shows, what fed it, how to rebuild it."""

from __future__ import annotations

from folk.report.claims import Claim, render_claims
from folk.report.plotting import FIG_PIXELS, FigureInfo
from folk.report.table import Table
from folk.report.writers import Stamp

FORMATS = ("md", "tex", "csv", "html")


def _runs_list(runs: list[str], runs_dir: str) -> str:
    if not runs:
        return "none yet"
    return ", ".join(f"`{runs_dir.rstrip('/')}/{r}`" for r in runs)


def render_readme(
    tables: list[Table],
    figures: list[FigureInfo],
    stamp: Stamp,
    out_dir: str,
    n_runs: int,
    claims: list[Claim] = (),
) -> str:
    dirty = " (uncommitted changes)" if stamp.report_dirty else ""
    cmd = f"folk report --runs {stamp.runs_dir} --out {out_dir}"
    lines = [
        "# Results: the paper's tables and figures, generated from this pipeline's runs",
        "",
        f"Written by `{cmd}` at git {stamp.report_sha[:12]}{dirty} on {stamp.date}, from "
        f"{n_runs} run director{'y' if n_runs == 1 else 'ies'} under `{stamp.runs_dir}`. "
        "Do not edit: every file here is overwritten by the next report.",
        "",
        "Regenerate with",
        "",
        "```",
        cmd,
        "snakemake --cores 2 report   # the workflow's last rule",
        "```",
        "",
        "How to read them:",
        "- Every table exists as Markdown (`.md`), LaTeX (`.tex`, needs `\\usepackage{booktabs}`), "
        "CSV (`.csv`; the first lines start with `#`, so read it with "
        '`pandas.read_csv(path, comment="#")`) and HTML (`.html`, a page of its own with the '
        "evaluation protocol and the sources; Snakemake's report shows these).",
        "- A missing result is a dash (–) in Markdown/LaTeX and an empty field in the CSV, never "
        "a number. A table without any result still has its layout and a note.",
        "- Provenance: each CSV row has `run_dir` (run directories), `source` (the `metrics.json` or "
        "`DONE.json` files, relative to the runs directory) and `git_sha` (code that produced "
        "them); Markdown and LaTeX tables have one footnote per row with the run, task and file.",
        "- In the Markdown tables, each value of ours links to the log of the evaluation that "
        "produced it and each method to its run's resolved config: copies under `runs/`, "
        "with each evaluation's `metrics.json`.",
        "- Rows marked *published* are numbers reported by other projects "
        "(`folk/report/reference_numbers.csv`, transcribed from "
        "each project's own README), shown beside ours, with their source in the footnote. "
        "The dataset column says what every row was pre-trained on: a Fashion-MNIST demo row is "
        "not an ImageNet number; each experiment's `experiment.dataset_note` is in the footnotes.",
        "- Reference rows are computed by this pipeline on the same data with the same "
        "protocol: `random init` (the same backbone, not pre-trained; fine-tuned, it is the "
        "network trained from scratch), `raw pixels`, `majority class`. A value followed by "
        "↓ does not beat the random initialisation of its backbone.",
        f"- Figures are {FIG_PIXELS[0]}x{FIG_PIXELS[1]} px PNG plus PDF.",
        "",
    ]
    lines += render_claims(list(claims)) if claims else []
    lines += ["## Tables", ""]
    for t in tables:
        files = ", ".join(f"[`tables/{t.name}.{ext}`](tables/{t.name}.{ext})" for ext in FORMATS)
        status = "results" if t.has_results else "**no results yet** (layout only)"
        lines += [
            f"### {t.title}",
            "",
            f"Files: {files} — {status}.",
            "",
            t.description,
            "",
            f"- Runs with results: {_runs_list(t.runs_with_results, stamp.runs_dir)}",
            f"- Runs without results yet (shown as dashes): "
            f"{_runs_list([r for r in t.runs if r not in t.runs_with_results], stamp.runs_dir)}",
            f"- Datasets: {', '.join(t.datasets) or 'none yet'}",
            f"- Published rows: {sum(r.origin == 'published' for r in t.rows)}",
            f"- Results produced at git: {', '.join(s[:12] for s in t.git_shas) or 'none'}",
            "",
        ]
    lines += ["## Figures", ""]
    for f in figures:
        files = ", ".join(f"[`figures/{n}`](figures/{n})" for n in f.files)
        status = "" if f.has_data else " — **no results yet** (the figure says so)"
        lines += [f"### {f.title}", "", f"Files: {files}{status}.", "", f.description, ""]
        if f.runs:
            lines.append(f"- Fed by: {_runs_list(f.runs, stamp.runs_dir)}")
        lines.append(f"- Data: {', '.join(f.datasets) or 'none yet'}")
        if f.note:
            lines.append(f"- Note: {f.note}")
        lines.append("")
    return "\n".join(lines)
