"""The paper's claims, checked against the pipeline's own runs.

Each claim compares two main-grid runs that share backbone, data and pre-training epochs
(an ablation run never stands in for a main-grid one). A claim the runs do not support is
reported as not reproduced, with its numbers; a claim without the runs to check it says
which runs are missing. Nothing here is a number of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

from folk.config import evaluated_subset
from folk.report.collect import RANDOM_INIT, Run

HOLDS, NOT_REPRODUCED, NOT_CHECKED = "holds", "not reproduced at this scale", "not checked"
# top-1 accuracies on the eval.test_subset test images (few-shot and segmentation are not)
SAMPLED_TASKS = ("knn", "linear", "finetune")


@dataclass
class Claim:
    statement: str
    verdict: str
    evidence: list[str] = field(default_factory=list)


def _weight(run: Run) -> tuple[int, int]:
    """How much a run says: its seeds, then its evaluations."""
    return (len(run.seeds) or 1, len(run.evals))


def _groups(runs: list[Run], same_epochs: bool = True) -> dict[tuple, dict[str, Run]]:
    """Main-grid runs by (dataset, backbone, epochs): {method: run}; without ``same_epochs``
    by (dataset, backbone) (the random initialisation has 0 epochs). Of two runs of one
    method in a group (seeds that could not be merged: another evaluation protocol), the
    one with more seeds, then more evaluations, speaks for it, whatever order they come in."""
    out: dict[tuple, dict[str, Run]] = {}
    for run in runs:
        if run.ablation:
            continue
        key = (run.dataset, run.backbone, run.epochs if same_epochs else None)
        members = out.setdefault(key, {})
        if run.method not in members or _weight(run) > _weight(members[run.method]):
            members[run.method] = run
    return out


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" + (f" ± {std:.1f}" if std is not None else "")


def _primary(run: Run, task: str) -> tuple[float | None, float | None]:
    ev = run.eval(task, None)
    return ev.primary() if ev is not None else (None, None)


def _where(key: tuple) -> str:
    dataset, backbone, epochs = key
    unit = "epoch" if epochs == 1 else "epochs"
    return f"{backbone} on {dataset}" + (f", {epochs} pre-training {unit}" if epochs else "")


def _sampling_error(a: float, b: float, run: Run) -> float | None:
    """Standard error (points) of the difference of two accuracies a, b (%) measured on the
    same n test images: sqrt(p(1-p)/n + q(1-q)/n); None when n is not known from the config
    (the whole test split). With one seed it is the only spread there is."""
    n = evaluated_subset(run.cfg, "test")
    if n <= 0 or not (0 <= a <= 100 and 0 <= b <= 100):
        return None
    p, q = a / 100.0, b / 100.0
    return 100.0 * ((p * (1 - p) + q * (1 - q)) / n) ** 0.5


def _compare(
    statement: str,
    runs: list[Run],
    better: str,
    worse: str,
    tasks: tuple[str, ...],
    same_epochs: bool = True,
) -> Claim:
    """``better`` above ``worse`` on the primary metric of each task, per group."""
    evidence, outcomes = [], []
    for key, members in _groups(runs, same_epochs).items():
        if better not in members or worse not in members:
            continue
        for task in tasks:
            (a, a_std), (b, b_std) = _primary(members[better], task), _primary(members[worse], task)
            if a is None or b is None:
                continue
            # with a spread (over seeds), a difference inside it shows nothing; with one seed
            # the test set's sampling error is the spread (a top-1 task on a known test size)
            spread = max(s for s in (a_std, b_std, 0.0) if s is not None)
            one_seed = a_std is None and b_std is None
            sampling = (
                _sampling_error(a, b, members[better])
                if one_seed and task in SAMPLED_TASKS
                else None
            )
            if sampling is not None:
                spread = sampling
            outcomes.append(a - b > spread)
            if sampling is not None:
                note = (
                    f", one seed: within the test-set sampling error ±{sampling:.1f}"
                    if 0 < a - b <= spread
                    else f", one seed; sampling error ±{sampling:.1f}"
                )
            else:
                note = (
                    ", within the spread"
                    if 0 < a - b <= spread
                    else ", one seed: no spread measured"
                    if one_seed
                    else ""
                )
            evidence.append(
                f"{task} ({_where(key)}): {better} {_fmt(a, a_std)}, "
                f"{worse} {_fmt(b, b_std)} ({a - b:+.1f}{note})"
            )
    return _verdict(
        statement,
        evidence,
        outcomes,
        f"needs main-grid runs of {better} and {worse} with {'/'.join(tasks)} results",
    )


def _verdict(statement: str, evidence: list[str], outcomes: list[bool], missing: str) -> Claim:
    if not outcomes:
        return Claim(statement, NOT_CHECKED, [missing])
    return Claim(statement, HOLDS if all(outcomes) else NOT_REPRODUCED, evidence)


def _beats_random_init(runs: list[Run]) -> Claim:
    statement = (
        "Pre-training helps: the FOLK backbone beats the random initialisation of the "
        "same network on k-NN and the linear probe"
    )
    return _compare(statement, runs, "folk", RANDOM_INIT, ("knn", "linear"), same_epochs=False)


def _harder_reconstruction(runs: list[Run]) -> Claim:
    """Fig. 5: MFM with Com/RCom has a higher reconstruction loss than MFM's fixed filters."""
    statement = (
        "Com/RCom make MFM's reconstruction task harder (Fig. 5: the loss of "
        "mfm_comrcom stays above mfm's)"
    )
    evidence, outcomes = [], []
    for key, members in _groups(runs).items():
        if "mfm" not in members or "mfm_comrcom" not in members:
            continue
        losses = {}
        for name in ("mfm", "mfm_comrcom"):
            rows = [
                r["loss_rec"]
                for r in members[name].records
                if r.get("type") == "train" and r.get("loss_rec") is not None
            ]
            if rows:  # the second half of the run: past the first steps' common fall
                losses[name] = mean(rows[len(rows) // 2 :])
        if len(losses) == 2:
            outcomes.append(losses["mfm_comrcom"] > losses["mfm"])
            evidence.append(
                f"mean loss_rec over the second half of pre-training "
                f"({_where(key)}): mfm_comrcom {losses['mfm_comrcom']:.4f}, "
                f"mfm {losses['mfm']:.4f}"
            )
    return _verdict(
        statement,
        evidence,
        outcomes,
        "needs main-grid runs of mfm and mfm_comrcom with loss_rec records",
    )


def check_claims(runs: list[Run]) -> list[Claim]:
    return [
        _beats_random_init(runs),
        _compare(
            "FOLK is above MFM on few-shot learning at equal pre-training epochs",
            runs,
            "folk",
            "mfm",
            ("fewshot",),
        ),
        _harder_reconstruction(runs),
        _compare(
            "FOLK's distillation helps: FOLK is above MFM with Com/RCom (mfm_comrcom, the "
            "same filters without a teacher)",
            runs,
            "folk",
            "mfm_comrcom",
            ("knn", "linear", "finetune", "fewshot"),
        ),
        _compare(
            "FOLK is above MFM after fine-tuning at equal pre-training epochs",
            runs,
            "folk",
            "mfm",
            ("finetune",),
        ),
        _compare(
            "Pre-training gives fine-tuning a better start: the FOLK backbone fine-tuned "
            "beats the same network trained from scratch with the same recipe and budget",
            runs,
            "folk",
            RANDOM_INIT,
            ("finetune",),
            same_epochs=False,
        ),
    ]


def render_claims(claims: list[Claim]) -> list[str]:
    lines = [
        "## The paper's claims, as this pipeline's runs show them",
        "",
        "Each claim compares main-grid runs of the same backbone, data and pre-training "
        "epochs, on the primary metric of each evaluation; a difference no larger than "
        "the standard deviation shown (over seeds) does not count, nor, with one seed, "
        "one within the sampling error of the test set. *Not reproduced at "
        "this scale* means these runs do not show it: at demo scale (a small network, a few "
        "thousand Fashion-MNIST images, minutes of CPU) that says nothing about "
        "ImageNet.",
        "",
    ]
    for c in claims:
        lines.append(f"- **{c.statement}**: {c.verdict}.")
        lines += [f"  - {e}" for e in c.evidence]
    lines.append("")
    return lines
