"""The benchmark cannot rot: its smoke run (`python -m bench --smoke`, tiny settings, results in a temporary folder)
must write a well-formed results file whose numbers are real and agree with each other; the small pieces (targets,
the widget hook, the turn order) are checked on made-up inputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # bench/ is a folder of the repository, not an installed package

from bench import contenders, report, run  # noqa: E402
from explain.trace import Trace  # noqa: E402

CONTENDERS = ("explain_traced", "explain_untraced", "explain_widget", "transformers")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    names = sorted(os.listdir(out))
    stems = [n[: -len(".json")] for n in names if n.endswith(".json")]
    assert len(stems) == 1, names
    with open(out / f"{stems[0]}.json") as f:
        results = json.load(f)
    return out, stems[0], results, done.stdout


def close(a, b, rel=1e-9):
    return math.isclose(a, b, rel_tol=rel)


def test_smoke_writes_json_markdown_and_latest_to_its_folder(smoke):
    out, stem, results, stdout = smoke
    assert sorted(os.listdir(out)) == sorted([f"{stem}.json", f"{stem}.md", "latest.md"])
    assert stem == f"{results['date']}-{results['machine']['slug']}"
    markdown = (out / f"{stem}.md").read_text()
    assert markdown == (out / "latest.md").read_text() and markdown in stdout
    for label in report.LABELS.values():
        assert label in markdown


def test_smoke_results_have_every_measurement(smoke):
    results = smoke[2]
    assert results["format"] == "explain-bench" and results["settings"]["smoke"] is True
    assert list(results["dtypes"]) == ["float32"]
    entry = results["dtypes"]["float32"]
    assert set(entry["decode"]) == set(CONTENDERS)
    for name in ("explain_traced", "explain_untraced", "transformers"):
        assert entry["decode"][name]["available"] is True
    widget = entry["decode"]["explain_widget"]
    assert widget["available"] is True or widget["reason"].startswith("not available")
    assert set(entry["prefill"]) == {n for n in CONTENDERS if entry["decode"][n]["available"]}
    assert entry["cold_load"]["explain"]["available"] is True
    assert entry["cold_load"]["transformers"]["available"] is False  # skipped in the smoke run: it is slow
    assert {t["key"] for t in results["targets"]} == set(report.WHY)


def test_smoke_numbers_are_real_and_consistent(smoke):
    results = smoke[2]
    settings, entry = results["settings"], results["dtypes"]["float32"]
    new_tokens = settings["new_tokens"]
    bound = results["bandwidth"]["bytes_per_s"] / entry["weights"]["bytes_per_token"]
    assert close(entry["roofline_tokens_per_s"], bound)
    weights = entry["weights"]
    assert weights["tied_embedding"] is True and weights["parameter_bytes"] == 4 * weights["parameters"]
    assert weights["bytes_per_token"] > weights["parameter_bytes"] > weights["embedding_bytes"] > 0
    for name, summary in entry["decode"].items():
        if not summary["available"]:
            continue
        runs = summary["runs"]
        assert len(runs) == settings["prompts"] * settings["rounds"]
        for r in runs:
            assert r["new_tokens"] == new_tokens and r["decode_tokens"] == new_tokens - 1
            assert r["decode_s"] > 0 and close(r["tokens_per_s"], r["decode_tokens"] / r["decode_s"])
            assert 0 < r["prefill_s"] <= r["first_token_s"] and 0 < r["median_step_s"] < r["decode_s"]
            if name.startswith("explain"):
                assert 0 < r["forward_s"] < r["decode_s"]
        assert summary["decode_tokens"] == sum(r["decode_tokens"] for r in runs)
        assert close(summary["decode_s"], sum(r["decode_s"] for r in runs))
        assert close(summary["tokens_per_s"], summary["decode_tokens"] / summary["decode_s"])
        assert close(summary["ms_per_token"], 1000 / summary["tokens_per_s"])
        assert close(summary["roofline_share"], summary["median_tokens_per_s"] / bound)
        assert close(summary["median_ms_per_token"], 1000 / summary["median_tokens_per_s"])
        percentiles = summary["token_ms_percentiles"]
        assert 0 < percentiles["10"] <= percentiles["50"] <= percentiles["90"]
        assert summary["runs_tokens_per_s"]["min"] <= summary["runs_tokens_per_s"]["max"]
    for prefill in entry["prefill"].values():
        assert prefill["prompt_tokens"] == settings["prefill_tokens"]
        assert 0 < prefill["prefill_s"] <= prefill["first_token_s"]
        assert close(prefill["prompt_tokens_per_s"], prefill["prompt_tokens"] / prefill["prefill_s"])
    cold = entry["cold_load"]["explain"]
    assert cold["load_s"] > 0 and cold["generated_tokens"] == new_tokens
    assert cold["peak_rss_after_generate_bytes"] >= cold["peak_rss_after_load_bytes"] > weights["parameter_bytes"]
    trace = entry["trace_bytes_per_step"]
    assert trace["steps"] == new_tokens * settings["prompts"] * settings["rounds"]
    assert close(trace["bytes_per_step"], trace["bytes"] / trace["steps"]) and trace["max_step_bytes"] > 0
    assert trace["file_bytes"] > trace["bytes"] >= trace["steps"] * 500  # a greedy step is over a kilobyte
    default = entry["trace_bytes_per_step_default_call"]
    assert default["steps"] == new_tokens and default["processors"] == ["temperature", "top_k"]
    assert default["bytes_per_step"] > trace["bytes_per_step"]  # sampling keeps a top-20 list per processor
    long = entry["long_context"]
    assert long["prompt_tokens"] == settings["long_context_tokens"] and long["new_tokens"] == 3
    for name in ("explain_traced", "transformers"):
        row = long["contenders"][name]
        assert row["decode_tokens"] == 2 and close(row["median_tokens_per_s"], 1000 / row["median_ms_per_token"])
    assert close(
        long["explain_time_vs_transformers"],
        long["contenders"]["explain_traced"]["median_ms_per_token"]
        / long["contenders"]["transformers"]["median_ms_per_token"],
    )
    assert long["same_tokens_as_transformers"] is True
    assert "## Decode at a long context (48-token prompt)" in smoke[3]
    agreement = entry["agreement_with_transformers"]["explain_traced"]
    assert agreement["identical_runs"] == agreement["runs"]  # fp32 greedy: the same tokens as transformers


def test_smoke_measures_the_decoding_strategies(smoke):
    """One forward pass of each strategy in time and trace bytes, against greedy (issue 11: 4 beams, 5 samples)."""
    out, stem, results, _ = smoke
    measured = results["dtypes"]["float32"]["strategies"]
    strategies = measured["strategies"]
    assert list(strategies) == ["greedy", "5 samples", "4 beams", "prompt lookup"]
    for e in strategies.values():
        assert e["new_tokens"] == measured["new_tokens"] and e["trace_bytes"] > 0 and e["seconds"] > 0
        assert close(e["bytes_per_step"], e["trace_bytes"] / e["forward_passes"])
        assert close(e["bytes_vs_greedy"], e["bytes_per_step"] / strategies["greedy"]["bytes_per_step"])
    assert (
        strategies["5 samples"]["sequences"] == 5 and strategies["greedy"]["forward_passes"] == measured["new_tokens"]
    )
    assert strategies["prompt lookup"]["forward_passes"] <= measured["new_tokens"]
    assert 1 < strategies["4 beams"]["bytes_vs_greedy"] < 8  # every beam's top candidates, never whole rows
    assert "## Decoding strategies (float32)" in (out / f"{stem}.md").read_text()


def test_smoke_measures_batch_throughput(smoke):
    """bench/batching.py: batch sizes side by side (explain traced, untraced, transformers), the tracing overhead,
    the trace bytes per forward against batch size 1, and explain's texts equal to transformers'."""
    out, stem, results, _ = smoke
    measured = results["dtypes"]["float32"]["batching"]
    assert measured["sizes"] == [1, 2] and list(measured["batches"]) == ["1", "2"]
    for size, e in measured["batches"].items():
        assert e["prompts"] == int(size) and e["texts_equal_transformers"] is True
        for name, seconds in e["seconds"].items():
            assert seconds > 0 and close(e["tokens_per_s"][name], int(size) * measured["new_tokens"] / seconds)
        assert close(
            e["explain_vs_transformers"], e["tokens_per_s"]["explain_traced"] / e["tokens_per_s"]["transformers"]
        )
        assert close(e["tracing_overhead"], e["seconds"]["explain_traced"] / e["seconds"]["explain_untraced"] - 1)
        assert close(e["trace_bytes_per_row_step"] * int(size), e["trace_bytes_per_forward"])
    # one step record per row: a forward of 2 rows records about twice what a forward of 1 does
    assert 1.5 < measured["batches"]["2"]["trace_bytes_vs_size_1"] < 2.5
    assert measured["targets"]["texts_equal_transformers"] is True
    assert "## Batch throughput (float32)" in (out / f"{stem}.md").read_text()


# -- the pieces, on made-up inputs ---------------------------------------------------------------------------------
def made_up(traced=97.0, untraced=100.0, widget=None, reference=80.0, load=(2.0, 10.0), trace_bytes=1500.0):
    def summary(rate):
        return (
            {"available": True, "median_tokens_per_s": rate}
            if rate
            else {"available": False, "reason": "not available: x"}
        )

    return {
        "dtypes": {
            "float32": {
                "decode": {
                    "explain_traced": summary(traced),
                    "explain_untraced": summary(untraced),
                    "explain_widget": summary(widget),
                    "transformers": summary(reference),
                },
                "cold_load": {"explain": {"load_s": load[0]}, "transformers": {"load_s": load[1]}},
                "trace_bytes_per_step": {"bytes_per_step": trace_bytes},
            }
        }
    }


def by_key(results):
    return {t["key"]: t for t in report.targets(results)}


def test_targets_met_and_missed_say_by_how_much():
    met = by_key(made_up(traced=97.5, reference=70.0))
    assert met["tracing_overhead"]["met"] and math.isclose(met["tracing_overhead"]["value"], 2.5)
    assert met["speedup_vs_transformers"]["met"] and met["cold_load_ratio"]["met"]
    assert met["widget_overhead"]["met"] is None and "not available" in met["widget_overhead"]["note"]
    missed = by_key(made_up(traced=90.0, widget=80.0, reference=80.0, load=(4.0, 10.0), trace_bytes=5000.0))
    assert missed["tracing_overhead"]["miss"] == "7.0 points over"
    assert missed["widget_overhead"]["miss"] == "15.0 points over"
    assert missed["speedup_vs_transformers"]["miss"].startswith("0.18x short")
    assert missed["cold_load_ratio"]["miss"].startswith("0.15x over")
    assert missed["trace_bytes_per_step"]["miss"] == "904 B over"


def test_turns_rotate_so_each_contender_goes_first_in_turn():
    names = ["a", "b", "c"]
    assert [run.rotated(names, k)[0] for k in range(4)] == ["a", "b", "c", "a"]
    assert sorted(run.rotated(names, 2)) == names


class FakePipe:
    def __init__(self):
        self.trace = Trace()


def test_widget_hook_joins_a_dashboard_that_subscribes_itself(monkeypatch):
    class Dashboard:
        def __init__(self, source):
            self.seen = []
            source.trace.subscribe(self.seen.append)

    monkeypatch.setitem(sys.modules, "explain.widgets", types.SimpleNamespace(Dashboard=Dashboard))
    pipe = FakePipe()
    view, sinks, entry = contenders.attach_widget(pipe)
    assert entry == "explain.widgets.Dashboard" and len(sinks) == 1
    pipe.trace.emit("weights", "progress", {"file": "model.safetensors", "done": 1, "total": 1})
    assert len(view.seen) == 1


def test_widget_hook_reports_not_available_with_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "explain.widgets", types.SimpleNamespace())
    with pytest.raises(contenders.Unavailable, match="no live view entry point"):
        contenders.attach_widget(FakePipe())
    monkeypatch.setitem(sys.modules, "explain.widgets", None)  # import fails
    with pytest.raises(contenders.Unavailable, match="not importable"):
        contenders.attach_widget(FakePipe())


def test_saved_trace_bytes_per_step_are_what_the_file_grows_by(tmp_path):
    from bench import trace_size

    trace = Trace()
    trace.check_events = False  # made-up events: only their sizes matter here
    trace.emit("config", "config", {"architecture": "X"})
    run = trace.new_run()
    for step in range(3):
        trace.emit("generation", "step", {"step": step, "token": "caf\u00e9" * (step + 1)}, run=run)  # UTF-8
    trace.emit("generation", "end", {"new_tokens": 3}, run=run)
    measured = trace_size.saved_bytes_per_step(trace, {0, 1})
    each = [len(json.dumps(e.to_dict(), ensure_ascii=False).encode()) + 2 for e in trace.filter("generation", "step")]
    assert measured["steps"] == 3 and measured["bytes"] == sum(each) and measured["max_step_bytes"] == max(each)
    path = trace.save(tmp_path / "t.json")
    assert measured["file_bytes"] == os.path.getsize(path)


def test_long_context_section_only_when_measured():
    from bench import long_context

    assert long_context.markdown({"dtypes": {"float32": {}}}) == []
    row = {"median_ms_per_token": 80.0, "median_tokens_per_s": 12.5, "forward_ms_per_token": 78.0}
    results = {
        "dtypes": {
            "float32": {
                "long_context": {
                    "prompt_tokens": 2000,
                    "new_tokens": 32,
                    "rounds": 2,
                    "same_tokens_as_transformers": True,
                    "contenders": {
                        "explain_traced": row,
                        "transformers": dict(row, median_ms_per_token=100.0, forward_ms_per_token=None),
                    },
                }
            }
        }
    }
    text = "\n".join(long_context.markdown(results))
    assert "## Decode at a long context (2,000-token prompt)" in text
    assert "| float32 | explain traced | 80.0 | 12.50 | 78.0 | 0.80x |" in text
    assert "| float32 | transformers | 100.0 | 12.50 | n/a | 1.00x |" in text


def test_smoke_quantized_section(smoke):
    """quantization="gguf" rows (bench/quantized.py): measured, consistent, and its targets stated."""
    results = smoke[2]
    settings, entry = results["settings"], results["quantized"]
    decode = entry["decode"]
    assert decode["explain_float32"]["available"] and decode["explain_gguf"]["available"]
    assert decode["transformers_bfloat16"] == {
        "available": False,
        "reason": "skipped in the smoke run (--smoke): it is slow to load",
    }
    assert decode["llama_cpp"]["available"] or "llama-cpp-python" in decode["llama_cpp"]["reason"]
    for name in ("explain_float32", "explain_gguf"):
        assert [r["new_tokens"] for r in decode[name]["runs"]] == [settings["new_tokens"]] * settings["prompts"]
    weights = entry["weights"]
    assert weights["ratio"] == weights["explain_gguf_bytes"] / weights["explain_float32_bytes"] < 0.3
    assert weights["explain_float32_bytes"] == 4 * 134_515_008
    agreement = entry["agreement_with_float32"]
    assert agreement["steps"] == settings["new_tokens"] * settings["prompts"]
    assert agreement["agreement"] == agreement["agreeing_steps"] / agreement["steps"]
    cold = entry["cold_load"]
    assert cold["peak_rss_after_generate_bytes"] >= cold["peak_rss_after_load_bytes"] > weights["explain_gguf_bytes"]
    targets = {t["key"]: t for t in results["targets"]}
    assert targets["quantized_weight_memory"]["met"] is True
    assert targets["quantized_speed_vs_transformers_bf16"]["met"] is None  # no transformers in the smoke run
    assert 'quantization="gguf"' in (smoke[0] / "latest.md").read_text()


def test_quantized_targets_on_made_up_numbers():
    entry = {
        "decode": {
            "explain_gguf": {"available": True, "median_tokens_per_s": 30.0},
            "transformers_bfloat16": {"available": True, "median_tokens_per_s": 25.0},
            "llama_cpp": {"available": True, "median_tokens_per_s": 75.0},
        },
        "weights": {"ratio": 0.35},
        "agreement_with_float32": {"agreement": 0.85},
    }
    targets = {t["key"]: t for t in report.quantized_targets(entry)}
    assert targets["quantized_weight_memory"]["miss"].startswith("0.05x over")
    assert targets["quantized_speed_vs_transformers_bf16"]["miss"].startswith("0.30x short (25% more")
    assert targets["quantized_agreement"]["miss"] == "5.0 points short"
    assert targets["quantized_vs_llama_cpp"]["miss"].startswith("0.10x short")
    absent = {t["key"]: t for t in report.quantized_targets(None)}
    assert all(t["met"] is None and "not measured" in t["note"] for t in absent.values())
