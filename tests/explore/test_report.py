"""report.html rendered in headless Chromium: every plot draws, no console error, no remote asset.

Chromium: Debian's ``chromium`` package (``apt-get install -y chromium``; .ci/run installs it), or
any Chrome/Chromium binary named by ``DSE_CHROMIUM``. Without one the tests fail under CI
(``CI`` set) and are skipped elsewhere, with the command to install it.
"""
import html.parser
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from dse.app.build import load_hardware, load_model
from dse.core.conventions import DEFAULT
from dse.core.design import Design, Quant, Workload
from dse.explore import report as R
from dse.explore.tables import ops_frame
from tests.app.conftest import run_cli

INSTALL = "install it with `sudo apt-get install -y chromium` (Debian/Ubuntu) or point DSE_CHROMIUM at a Chrome binary"


def chromium() -> str:
    for name in (os.environ.get("DSE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = name and shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium not found under CI: {INSTALL}")
    pytest.skip(f"headless Chromium not found: {INSTALL}")


def render(path, query: str = "") -> tuple[str, str]:
    """The DOM after the page's scripts ran, and Chromium's log (console messages included)."""
    p = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        "--host-resolver-rules=MAP * ~NOTFOUND",  # any network request fails (and is counted)
                        "--virtual-time-budget=20000", "--dump-dom", f"file://{path}{query}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, p.stderr


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.remote = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href", "srcset", "data", "poster", "action") and v and \
                    re.match(r"\s*(https?:)?//", v, re.I):
                self.remote.append(f"<{tag} {k}={v}>")


def remote_assets(text: str) -> list[str]:
    p = _Links()
    p.feed(text)
    css = re.findall(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)|@import\s+['\"]?(?:https?:)?//", text, re.I)
    return p.remote + css


def check_page(path, selftest=False) -> str:
    text = path.read_text(encoding="utf-8")
    assert remote_assets(text) == [], "remote assets in the file"
    dom, log = render(path, "?selftest" if selftest else "")
    expected = int(re.search(r'data-plots-expected="(\d+)"', dom).group(1))
    assert expected > 0
    assert f'data-plots-drawn="{expected}"' in dom, "not every plot finished drawing"
    assert not re.search(r"<html[^>]*data-errors=", dom), "the page reported a console error"
    assert "Uncaught" not in log and "Failed to load resource" not in log, log[-2000:]
    assert dom.count('class="main-svg"') >= expected  # plotly draws each plot into its SVG layers
    assert remote_assets(dom) == [], "remote assets in the rendered page"
    if selftest:
        n = len(re.findall(r'<select id="s\d+-x"', dom))
        assert f'data-selftest="{n}/{n}"' in dom, "an axis dropdown did not redraw its plot"
    return dom


def test_default_study_writes_a_report_that_draws(tmp_path):
    run_cli("hydra.run.dir=.", cwd=tmp_path)  # `python -m dse`, the default study
    dom = check_page(tmp_path / "report.html", selftest=True)
    assert 'id="s0-x"' in dom and 'id="s0-y"' in dom  # the Pareto explorer's axis dropdowns
    assert "decode_tokens_per_s" in dom and "model.n_kv_heads" in dom  # objectives and the design's knobs
    assert "Roofline" in dom and "Time per operator" in dom


def _ops():
    d = Design(load_model("llama2_7b"), Quant(), Workload(8.0, 1024.0, 128.0, 1.0))
    hw = load_hardware("h100_sxm")
    return ops_frame(d, hw, DEFAULT), hw


def test_every_section_draws_offline(tmp_path):
    ops, hw = _ops()
    rng = np.random.default_rng(0)
    n = 300
    serve = pd.DataFrame({"workload.concurrency": rng.integers(1, 256, n), "workload.tp": rng.choice([1, 2, 4, 8], n),
                          "tokens_per_s_per_user": rng.uniform(5, 200, n)})
    serve["tokens_per_s_per_gpu"] = 4e4 / serve.tokens_per_s_per_user * rng.uniform(0.5, 1, n)
    serve["fits_memory"] = True
    front = serve.nlargest(20, "tokens_per_s_per_gpu")
    sections = [R.pareto_section(serve, front, [{"key": "tokens_per_s_per_gpu", "dir": "max"}]),
                R.roofline_section(ops, {"fp16/bf16": float(hw.peak_fp16), "fp8": float(hw.peak_fp8)}, float(hw.mem_bw),
                                   device="h100_sxm"),
                R.ops_section(ops), R.serve_section(serve),
                R.lines_section(serve.sort_values("workload.concurrency"), "workload.concurrency",
                                "tokens_per_s_per_gpu", color="workload.tp"),
                R.table_section(serve, title="a table </script><b>escaped</b>", max_rows=5)]
    path = R.write_report(tmp_path / "report.html", "every section", sections)
    dom = check_page(path, selftest=True)
    assert dom.count("<select") == 6  # two explorers × (x, y, colour)
    assert "&lt;/script&gt;" in dom  # titles are escaped


def test_serve_front_is_the_max_max_front():
    df = pd.DataFrame({"tokens_per_s_per_user": [10.0, 20.0, 30.0, 15.0], "tokens_per_s_per_gpu": [300.0, 200.0, 100.0, 150.0]})
    s = R.serve_section(df)
    front = [u for u, f in zip(s.explorer["columns"]["tokens_per_s_per_user"], s.explorer["front"]) if f]
    assert sorted(front) == [10.0, 20.0, 30.0]  # (15, 150) is dominated by (20, 200)


def test_evaluate_writes_a_report(make_cfg, tmp_path, monkeypatch):
    # the section types are rendered above; here: the task's page has its parts and nothing remote
    # (task=trends and task=casestudy: tests/app/test_paper.py; multirun: tests/app/test_launchers.py)
    from dse.app.main import run
    monkeypatch.chdir(tmp_path)
    run(make_cfg("task=evaluate"))
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert all(p in text for p in ["Metrics (result.json)", "Roofline", "Time per operator", "lm_head"])
    assert remote_assets(text) == [] and "data-plots-expected='2'" in text
