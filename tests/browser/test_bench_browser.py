"""The real-browser benchmark cannot rot: a smoke run (`python -m bench.browser --tokens 4 --rounds 1 --scale 40`)
writes a results file whose numbers are real and agree with each other."""

from __future__ import annotations

import json
import subprocess
import sys

from browser_support import ROOT


def test_browser_benchmark_smoke(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.browser",
            "--tokens",
            "4",
            "--rounds",
            "1",
            "--scale",
            "40",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = [p for p in tmp_path.iterdir() if p.name.endswith("-browser.json")]
    assert len(results) == 1 and (tmp_path / "browser-latest.md").exists()
    report = json.loads(results[0].read_text())
    assert [c["kind"] for c in report["calls"]] == ["without", "with"]
    assert all(c["tokens"] == 4 and c["tokens_per_s"] > 0 for c in report["calls"])
    with_view = report["calls"][1]
    assert with_view["frames"] > 0 and with_view["chart_visible"]  # the page got the dashboard's messages
    assert with_view["chart_draws"] >= 1 and with_view["chart_draw_ms"] > 0, with_view  # every view's draws counted
    summary = report["summary"]
    assert summary["tokens_per_s_without"] == report["calls"][0]["tokens_per_s"]
    assert abs(summary["cost_percent"] - 100 * (1 - with_view["tokens_per_s"] / summary["tokens_per_s_without"])) < 1e-9
    assert set(summary["first_display_s"]) == {"show, fresh kernel", "step_through", "show, warm"}
    assert all(0 < s < 120 for s in summary["first_display_s"].values())
    loading = summary["targets"]["loading_paint_s"]  # explain.pipeline(...) sent -> its loading stages on the page
    assert loading["value"] == report["loading_paint_ms"] / 1000 and 0 < loading["value"] < 120
    assert f"loading stages on the page in {loading['value']:.2f} s" in (tmp_path / "browser-latest.md").read_text()
    assert f"{summary['cost_percent']:.1f}%" in (tmp_path / "browser-latest.md").read_text()
    scale = report["scale"]  # a run of 40 steps: every click drew its step, the live page showed every step
    assert scale["steps"] == 40 and len(scale["click_ms"]) == 10 and all(c and c > 0 for c in scale["click_ms"])
    assert all(0 <= d <= c for d, c in zip(scale["click_chart_draw_ms"], scale["click_ms"], strict=True))
    assert scale["live"]["page_done_after_s"] > 0 and scale["export_open_s"] > 0 and scale["export_bytes"] > 0
    assert summary["targets"]["click_ms"]["value"] == max(scale["click_ms"])
    assert "A run of 40 steps" in (tmp_path / "browser-latest.md").read_text()
