"""Snakemake's HTML report of the tiny workflow (params/test_tiny.yaml), opened in headless
Chromium the way a reader uses it: the categories and every table, figure and curve that
`folk report` wrote are listed; a click on a table shows its cells (a number of
knn_linear.csv), a click on a figure shows the image, the workflow page carries the
experiment's description and parameters, and the screenshots are not blank.

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages on file descriptors 3 and 4), so the test needs Chromium and the standard
library only. scripts/test.sh installs Debian's ``chromium`` where it is missing; without
it the test is skipped and says why.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from conftest import copy_finished_workflow  # noqa: E402
from test_workflow import snakemake  # noqa: E402

PARAMS = "params/test_tiny.yaml"
EXP = "test_tiny"
CATEGORIES = ("Curves", "Figures", "Runs", "Tables")
WINDOW = (1600, 1000)


def chromium_binary() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


class Browser:
    """One headless Chromium page, driven over the DevTools protocol on a pipe."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0):
        self.timeout = timeout
        self._id = 0
        self._buffer = b""
        self.events: list[dict] = []
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands on fd 3 and answers on fd 4: the shell puts the pipes there
        args = [
            binary,
            "--headless",
            "--no-sandbox",  # as root, as CI runs
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",  # never a profile another session uses
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', "chromium", *args],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (status {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def evaluate(self, expression: str, context: int | None = None):
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if context is not None:
            params["contextId"] = context
        reply = self.send("Runtime.evaluate", session=True, **params)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, what: str, context: int | None = None):
        """The value of ``expression`` once it is truthy (the report renders with React,
        after the page's load)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression, context)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def open(self, url: str) -> None:
        self.send("Page.navigate", session=True, url=url)

    def click(self, text: str) -> None:
        """Click the link that a reader sees as ``text`` (a menu entry, a breadcrumb)."""
        found = self.wait_for(
            "(() => { const a = [...document.querySelectorAll('a')].find("
            f"x => x.textContent.trim() === {json.dumps(text)}); "
            "if (a) { a.click(); return true; } return false; })()",
            f"a link {text!r}",
        )
        assert found

    def home(self) -> None:
        """Back to the menu: the house at the start of the breadcrumbs."""
        self.wait_for(
            "(() => { const a = document.querySelector('nav ol li a'); "
            "if (a) { a.click(); return true; } return false; })()",
            "the breadcrumbs",
        )

    def view_result(self, label: str) -> None:
        """Click the eye button of the result whose first column reads ``label``."""
        self.wait_for(
            "(() => { const row = [...document.querySelectorAll('tr')].find("
            f"r => r.cells.length && r.cells[0].textContent.trim() === {json.dumps(label)}); "
            "const a = row && row.querySelector('a'); "
            "if (a) { a.click(); return true; } return false; })()",
            f"a result {label!r}",
        )

    def frame_context(self) -> int:
        """A JavaScript context inside the content frame (a table's page), once loaded."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            tree = self.send("Page.getFrameTree", session=True)["frameTree"]
            children = tree.get("childFrames", [])
            if children:
                frame = children[-1]["frame"]
                if frame.get("url", "").startswith("data:text/html"):
                    return self.send("Page.createIsolatedWorld", session=True, frameId=frame["id"])[
                        "executionContextId"
                    ]
            time.sleep(0.2)
        raise AssertionError("no content frame with a table's page")

    def screenshot(self, path: Path) -> Image.Image:
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return Image.open(io.BytesIO(path.read_bytes())).convert("RGB")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def not_blank(im: Image.Image) -> None:
    """A rendered page: many distinct colours and a good share of non-background pixels."""
    colours = im.getcolors(maxcolors=1 << 24)
    assert len(colours) > 200, f"{len(colours)} colours"
    _, background = max(colours)
    other = sum(n for n, c in colours if c != background)
    assert other > 0.05 * im.width * im.height, f"{other} pixels differ from the background"


@pytest.fixture(scope="module")
def report(tiny_workflow_run, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the finished tiny workflow, then its HTML report: (workflow, report)."""
    if chromium_binary() is None:
        pytest.skip(
            "Chromium is not installed (Debian: apt-get install chromium; scripts/test.sh "
            "installs it when run as root)"
        )
    wf = copy_finished_workflow(tiny_workflow_run, tmp_path_factory.mktemp("html") / "wf")
    html = wf / "results" / EXP / "report.html"
    res = snakemake(wf, "--configfile", PARAMS, "--report", str(html), timeout=600)
    assert res.returncode == 0, res.stderr[-5000:]
    return wf, html


@pytest.fixture(scope="module")
def browser(report, tmp_path_factory):
    b = Browser(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"))
    try:
        b.open(report[1].resolve().as_uri())
        b.wait_for("document.querySelector('#app') && typeof app !== 'undefined'", "the app")
        yield b
    finally:
        b.close()


@pytest.mark.slow
def test_report_lists_every_table_figure_and_curve(report, browser, tmp_path):
    wf, html = report
    results = wf / "results" / EXP
    assert html.stat().st_size > 100_000
    browser.click("Workflow")
    text = browser.wait_for(
        "document.body.innerText.includes('Results') && document.body.innerText", "the menu"
    )
    for category in CATEGORIES:
        assert category in text, category
    # the workflow description: the experiment, its grid and the parameters read
    assert f"experiment {EXP}" in text and "Main grid: folk, mfm" in text
    assert "Tiny test configuration".lower() in text.lower()
    assert '"head_out_dim": 128' in browser.evaluate("document.body.innerHTML")
    not_blank(browser.screenshot(tmp_path / "workflow.png"))

    shown = {}
    for category, folder, ext in (("Tables", "tables", "html"), ("Figures", "figures", "png")):
        browser.home()
        browser.click(category)
        names = sorted(p.stem for p in (results / folder).glob(f"*.{ext}"))
        assert names, folder
        listed = browser.wait_for(
            f"document.body.innerText.includes({json.dumps(names[0])}) && document.body.innerText",
            f"the {category} list",
        )
        shown[category] = [n for n in names if n in listed.split()]
        assert shown[category] == names, (category, set(names) - set(shown[category]))
    assert "knn_linear" in shown["Tables"] and "teacher_diagnostics" in shown["Figures"]
    browser.home()
    browser.click("Curves")
    listed = browser.wait_for("document.body.innerText", "the Curves category")
    assert "train records" in listed and "knn records" in listed
    browser.click("train records")
    runs = sorted(p.stem for p in (results / "plots" / "train").glob("*.csv"))
    listed = browser.wait_for(
        f"document.body.innerText.includes({json.dumps(runs[-1])}) && document.body.innerText",
        "the train records",
    )
    assert runs == ["folk", "mfm"] and all(r in listed.split() for r in runs)
    not_blank(browser.screenshot(tmp_path / "curves.png"))


@pytest.mark.slow
def test_a_table_and_a_figure_render_once_opened(report, browser, tmp_path):
    wf, _ = report
    results = wf / "results" / EXP
    browser.home()
    browser.click("Tables")
    browser.view_result("knn_linear")
    frame = browser.frame_context()
    cells = browser.wait_for(
        "document.querySelectorAll('table td').length && "
        "[...document.querySelectorAll('table td')].map(td => td.textContent.trim())",
        "the cells of knn_linear",
        context=frame,
    )
    page = browser.evaluate("document.body.innerText", frame)
    assert "weighted k-NN classifier" in page  # the protocol, above the table
    ours = pd.read_csv(results / "tables" / "knn_linear.csv", comment="#")
    ours = ours[ours["results"] == "ours"]
    value = ours["k-NN top-1"].dropna().iloc[0]
    # a cell is the value, then a spread or a mark (↓: not above the random initialisation)
    assert f"{value:.1f}" in {c.split(" ")[0] for c in cells}, (value, cells)
    assert any(c.startswith("random init") for c in cells)
    table_png = browser.screenshot(tmp_path / "knn_linear.png")
    not_blank(table_png)

    browser.home()
    browser.click("Figures")
    browser.view_result("knn_epochs")
    size = browser.wait_for(
        "(() => { const img = [...document.images].find(i => i.src.startsWith("
        "'data:image/png') && i.complete && i.naturalWidth > 0); "
        "return img && [img.naturalWidth, img.naturalHeight]; })()",
        "the figure knn_epochs",
    )
    assert size == [1600, 900]
    figure_png = browser.screenshot(tmp_path / "knn_epochs.png")
    not_blank(figure_png)
    assert figure_png.tobytes() != table_png.tobytes()

    browser.home()
    browser.click("Runs")
    browser.view_result("runs and their configuration")
    frame = browser.frame_context()
    runs = browser.wait_for(
        "document.querySelector('#runs') && [...document.querySelectorAll('#runs tbody tr')]"
        ".map(r => r.cells[0].textContent.trim())",
        "the runs page",
        frame,
    )
    assert runs == sorted(p.name for p in (wf / "runs" / EXP).iterdir() if p.is_dir())
    assert set(runs) == {"folk", "mfm", "folk-p_com0.25", "random_init"}
    configs = browser.evaluate(
        "[...document.querySelectorAll('pre.config')].map(p => p.textContent)", frame
    )
    assert len(configs) == 4 and all("run_name:" in c for c in configs)
