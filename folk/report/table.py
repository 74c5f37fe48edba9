"""The in-memory form of one report table, shared by the table builders and the writers.

A table is a list of rows; each row has label columns (``keys``: method, backbone, dataset,
...) and value cells. Every cell of our own results remembers the file it was read from, so
the writers can put the path in the CSV and a footnote in Markdown and LaTeX.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OURS = "ours"
PUBLISHED = "published"
BELOW_MARK = "↓"  # after a value that does not beat the random initialisation


@dataclass
class Cell:
    value: float | None = None
    std: float | None = None
    source: str = ""  # file the value was read from, relative to --runs
    detail: str = ""  # footnote text: run, task, evaluation details
    finished_at: str = ""  # to keep the newest of two results for one cell
    below_reference: bool = False  # not above the random initialisation's cell

    @property
    def missing(self) -> bool:
        return self.value is None


@dataclass
class Column:
    name: str
    decimals: int | str = 1  # digits after the point, or "auto" (3 significant digits
    # for small values, so 20 s of a demo run is not "0.00" h)


@dataclass
class Row:
    keys: dict[str, str | None]
    cells: dict[str, Cell] = field(default_factory=dict)
    origin: str = OURS
    runs: list[str] = field(default_factory=list)  # run dirs relative to --runs
    notes: list[str] = field(default_factory=list)  # dataset notes, published source
    git_shas: list[str] = field(default_factory=list)  # SHAs of the code that produced it

    def add_run(self, rel: str, notes: list[str], git_sha: str) -> None:
        if rel not in self.runs:
            self.runs.append(rel)
        for n in notes:
            if n not in self.notes:
                self.notes.append(n)
        if git_sha and git_sha not in self.git_shas:
            self.git_shas.append(git_sha)

    def put(self, column: str, cell: Cell) -> Cell | None:
        """Place ``cell``; on a clash keep the newer result and return the one set aside."""
        old = self.cells.get(column)
        if old is None or old.missing:
            self.cells[column] = cell
            return None
        if cell.missing:
            return None
        if cell.finished_at > old.finished_at:
            self.cells[column] = cell
            return old
        return cell


@dataclass
class Table:
    name: str  # file stem under tables/
    title: str
    description: str  # what it shows (README and file header)
    key_columns: list[str]
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # table-level notes
    protocol: list[str] = field(default_factory=list)  # folk.report.protocol's lines
    empty_note: str = "No results yet."
    unit: str = "top-1 accuracy (%)"

    @property
    def our_rows(self) -> list[Row]:
        return [r for r in self.rows if r.origin == OURS]

    @property
    def has_results(self) -> bool:
        return any(not c.missing for r in self.our_rows for c in r.cells.values())

    @property
    def runs(self) -> list[str]:
        out: list[str] = []
        for r in self.our_rows:
            out += [x for x in r.runs if x not in out]
        return out

    @property
    def runs_with_results(self) -> list[str]:
        """Run directories (relative to --runs) whose files filled at least one cell."""
        out: list[str] = []
        for r in self.our_rows:
            if any(not c.missing for c in r.cells.values()):
                out += [x for x in r.runs if x not in out]
        return out

    @property
    def datasets(self) -> list[str]:
        out: list[str] = []
        for r in self.our_rows:
            for k in ("dataset", "pre-train data", "eval data"):
                v = r.keys.get(k)
                if v and v not in out:
                    out.append(v)
        return out

    @property
    def git_shas(self) -> list[str]:
        out: list[str] = []
        for r in self.our_rows:
            out += [s for s in r.git_shas if s not in out]
        return out

    def has_std(self, column: str) -> bool:
        return any(r.cells.get(column) and r.cells[column].std is not None for r in self.rows)

    def add_key_column(self, name: str, after: str | None = None) -> None:
        if name in self.key_columns:
            return
        if after in self.key_columns:
            self.key_columns.insert(self.key_columns.index(after) + 1, name)
        else:
            self.key_columns.append(name)
