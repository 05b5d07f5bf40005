"""The GPU benchmark cannot rot while no GPU runs it: `python -m bench.gpu --smoke` runs every section on the CPU
with a tiny Llama of Llama-3.1-8B-Instruct's structure, and its results file must hold every section with real,
self-consistent numbers and passed fidelity checks. The pieces the GPU run leans on (the tolerance's formula,
the greedy rule, the synthetic checkpoint's shapes and tokenizer, the placement checks on a really offloaded
model, the host-sync counter) are tested here on made-up or tiny inputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # bench/ is a folder of the repository, not an installed package

from bench import fidelity, gpu_report, synthetic  # noqa: E402
from bench.syncs import HostReads, count_step_syncs  # noqa: E402

SECTIONS = ("weights", "load", "speed", "fidelity", "offload", "backend")


def run_smoke(out, model, *extra):
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--smoke", "--out", str(out), "--model", str(model), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return done


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out, model = tmp_path_factory.mktemp("bench-gpu"), tmp_path_factory.mktemp("bench-gpu-model") / "tiny"
    done = run_smoke(out, model)
    assert done.returncode == 0, done.stderr[-4000:]
    names = sorted(os.listdir(out))
    stems = [n[: -len(".json")] for n in names if n.endswith(".json")]
    assert len(stems) == 1 and stems[0].endswith("-smoke"), names
    with open(out / f"{stems[0]}.json") as f:
        results = json.load(f)
    return {
        "out": out,
        "model": model,
        "stem": stems[0],
        "results": results,
        "stdout": done.stdout,
        "stderr": done.stderr,
    }


def close(a, b, rel=1e-9):
    return math.isclose(a, b, rel_tol=rel)


def test_smoke_writes_every_section_to_a_smoke_named_json_and_markdown(smoke):
    results, out, stem = smoke["results"], smoke["out"], smoke["stem"]
    assert sorted(os.listdir(out)) == sorted([f"{stem}.json", f"{stem}.md"])  # no partial files left
    assert results["format"] == "explain-bench-gpu" and results["settings"]["smoke"] is True
    assert stem == f"{results['date']}-{results['machine']['slug']}-smoke"
    assert list(results["sections"]) == list(SECTIONS)
    for name, entry in results["sections"].items():
        assert entry["status"] == "ok" or (
            name == "backend" and entry["status"] == "not available" and entry["reason"]
        ), (name, entry)
        assert entry["seconds"] >= 0
    summary = results["summary"]
    assert summary["sections_ok"] is True and summary["checks_passed"] is True
    assert summary["checks"] == {"fidelity": True, "placement": True}
    markdown = (out / f"{stem}.md").read_text()
    assert markdown in smoke["stdout"]
    for title in gpu_report.SECTION_TITLES.values():
        assert f"## {title}" in markdown
    # progress went to stderr with timestamps, one start and one end per section
    for name in SECTIONS:
        assert f"] {name}: start" in smoke["stderr"]


def test_smoke_weights_are_the_tiny_llama_in_bfloat16(smoke):
    weights = smoke["results"]["sections"]["weights"]
    config = synthetic.llama_config(smoke=True)
    parameters = sum(synthetic.numel(s) for s in synthetic.parameter_shapes(config).values())
    assert weights["parameters"] == parameters and weights["bytes"] == 2 * parameters
    assert weights["shards"] == 1 and weights["reused"] is False and weights["dtype"] == "bfloat16"
    with open(smoke["model"] / "config.json") as f:
        assert json.load(f) == config
    with open(smoke["model"] / "model.safetensors.index.json") as f:
        index = json.load(f)
    assert set(index["weight_map"]) == set(synthetic.parameter_shapes(config))
    assert index["metadata"]["total_size"] == weights["bytes"]


def test_smoke_load_and_speed_numbers_are_real_and_consistent(smoke):
    results = smoke["results"]
    settings, load, speed = results["settings"], results["sections"]["load"], results["sections"]["speed"]
    for name in ("explain", "transformers"):
        assert 0 < load[name]["pid_start_to_import_s"] < load[name]["load_s"]
        assert load[name]["generated_ids"] > 0 and load[name]["peak_rss_after_load_bytes"] > 0
    assert close(load["explain_vs_transformers"], load["explain"]["load_s"] / load["transformers"]["load_s"])
    for name in ("explain_traced", "explain_untraced", "transformers"):
        decode = speed["decode"][name]
        assert decode["available"] is True
        assert decode["decode_tokens"] == settings["prompts"] * (settings["new_tokens"] - 1)
        assert close(decode["tokens_per_s"], decode["decode_tokens"] / decode["decode_s"])
        if name.startswith("explain"):
            assert 0 < decode["forward_ms_per_token"] < decode["ms_per_token"]
    widget = speed["decode"]["explain_widget"]
    assert widget["available"] is True or widget["reason"].startswith("not available")
    for prefill in speed["prefill"].values():
        assert prefill["prompt_tokens"] == settings["prefill_tokens"]
        assert close(prefill["prompt_tokens_per_s"], prefill["prompt_tokens"] / prefill["prefill_s"])
    seed = speed["seed_call"]
    for name in ("explain", "transformers"):
        assert seed[name]["prompt_tokens"] + seed[name]["new_tokens"] == settings["seed_max_length"]
        assert close(seed[name]["tokens_per_s"], seed[name]["new_tokens"] / seed[name]["seconds"])
    assert seed["explain"]["processors"] == ["temperature", "top_k", "top_p"]  # Llama-3.1's sampling defaults
    assert speed["agreement_with_transformers"]["explain_traced"]["identical_runs"] == settings["prompts"]
    forward = speed["forward_breakdown"]
    assert forward["explain_forward_ms"] > 0 and forward["transformers_forward_ms"] > 0
    assert speed["host_syncs"]["greedy"]["syncs_per_decode_step"] == 3
    assert speed["host_syncs"]["greedy"]["host_to_device_per_decode_step"] == 0
    assert {t["key"] for t in speed["targets"]} == {"tracing_overhead", "widget_overhead", "trace_bytes_per_step"}
    assert speed["placement"]["devices"] == ["cpu"]


def test_smoke_fidelity_passed_and_its_tolerance_is_the_formula(smoke):
    entry = smoke["results"]["sections"]["fidelity"]
    settings = smoke["results"]["settings"]
    assert entry["passed"] is True
    assert entry["greedy"]["equal"] is True and entry["greedy"]["tokens"] == settings["fidelity_tokens"]
    assert entry["explain_ids"] == entry["reference_ids"]
    assert entry["decode_logits"]["within_tolerance"] and entry["teacher_forced_logits"]["within_tolerance"]
    assert entry["teacher_forced_logits"]["argmax_equal"] == settings["fidelity_tokens"] + 1
    t = entry["tolerance"]
    assert t["unit_roundoff"] == 2**-8 and t["roundings"] == 2 * t["layers"] + 1 == 9
    assert close(t["k"], math.sqrt(2 * math.log(t["rows"] * t["vocab"])))
    assert close(t["tolerance"], 2 * t["k"] * t["sigma"])
    # the derivation, checked against float32 on this CPU: the noise is the predicted size, within its bound
    noise = entry["noise_model"]
    assert noise["checked"] is True and noise["passed"] is True
    for name in ("explain", "transformers"):
        assert 0.25 <= noise[name]["rms_ratio"] <= 2.0 and 0 < noise[name]["max"] <= t["one_implementation_bound"]


def test_smoke_offload_section_checks_the_placement_event(smoke):
    entry = smoke["results"]["sections"]["offload"]
    assert entry["passed"] is True and entry["plan_equals_transformers"] is True
    assert entry["checks"]["passed"] is True and entry["checks"]["mismatches"] == []
    assert entry["checks"]["ran_on"] == {"": "cpu"}  # no GPU here: one device, nothing offloaded
    assert entry["explain_event"]["offloaded"] == [] and entry["explain_hooks"] == 0
    for decode in entry["decode"].values():
        assert decode["new_tokens"] == smoke["results"]["settings"]["offload_tokens"] and decode["tokens_per_s"] > 0


def test_rerunning_one_section_keeps_the_others(smoke):
    before = smoke["results"]
    done = run_smoke(smoke["out"], smoke["model"], "--sections", "backend")
    assert done.returncode == 0, done.stderr[-3000:]
    with open(smoke["out"] / f"{smoke['stem']}.json") as f:
        after = json.load(f)
    assert "reusing the model folder" in done.stderr
    assert after["sections"]["speed"] == before["sections"]["speed"]
    assert after["sections"]["weights"]["reused"] is True
    assert after["earlier_runs"] == [before["started"]]


# -- the pieces ------------------------------------------------------------------------------------------------------
def test_tolerance_follows_its_derivation():
    rows = torch.tensor([[3.0, -4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    bound = fidelity.tolerance(rows, layers=2)
    u, roundings = 2**-8, 5
    sigma = max(u / math.sqrt(3) * math.sqrt(roundings * (25 / 4) + 16), u / math.sqrt(3) * math.sqrt(roundings + 1))
    assert close(bound["sigma"], sigma, 1e-6) and close(bound["k"], math.sqrt(2 * math.log(8)))
    assert close(bound["tolerance"], 2 * bound["k"] * sigma, 1e-6)


def test_noise_of_bfloat16_rounding_is_the_predicted_size():
    """Rounding a row to bfloat16 once is the derivation with no layers (R = 1): noise u/sqrt(3) |z| per logit."""
    generator = torch.Generator().manual_seed(0)
    exact = torch.randn(4, 50000, generator=generator) * 2
    low = exact.to(torch.bfloat16).float()
    checked = fidelity.check_noise_model(low, exact, fidelity.tolerance(exact, layers=0))
    assert checked["passed"] and 0.25 <= checked["rms_ratio"] <= 1.0  # one rounding, two predicted: an upper estimate


def test_greedy_rule_accepts_only_a_near_tie():
    rows = torch.zeros(3, 5)
    rows[:, 1] = 1.0
    same = fidelity.greedy([1, 1, 1], [1, 1, 1], rows, rows, limit=0.1)
    assert same["passed"] and same["equal_tokens"] == 3
    tied_reference = rows.clone()
    tied_reference[1, 2] = 0.99  # transformers' best two are 0.01 apart; explain's logits moved them by 0.02
    ours = rows.clone()
    ours[1, 2], ours[1, 1] = 1.0, 0.99
    tie = fidelity.greedy([1, 2, 1], [1, 1, 1], ours, tied_reference, limit=0.1)
    assert tie["passed"] and tie["first_difference_at"] == 1 and tie["near_tie"]
    far = fidelity.greedy([1, 3, 1], [1, 1, 1], rows, rows, limit=0.1)  # explain picked a token 1.0 below
    assert not far["passed"]


def test_synthetic_checkpoint_has_llama_31_8bs_shapes_and_shards():
    config = synthetic.llama_config(smoke=False)
    shapes = synthetic.parameter_shapes(config)
    assert sum(synthetic.numel(s) for s in shapes.values()) == 8_030_261_248  # the published count
    shards = synthetic.shard_plan(shapes, element_bytes=2)
    assert len(shards) == 4  # as the Hub's checkpoint
    for names in shards:
        assert sum(2 * synthetic.numel(shapes[n]) for n in names) <= synthetic.SHARD_BYTES
    assert [n for names in shards for n in names] == list(shapes)


def test_synthetic_tokenizer_has_llama_3s_ids(tmp_path):
    import transformers

    from explain.stages.tokenizer import Tokenizer

    synthetic.write_tokenizer(str(tmp_path), 128256)
    ours = Tokenizer.from_folder(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert ours.vocab_size == len(theirs) == 128256
    assert ours.bos_token_id == 128000 and ours.eos_token_id == 128009
    text = "Write a story about a cat, 42 times!"
    assert ours.encode(text) == theirs(text)["input_ids"] and ours.encode(text)[0] == 128000
    assert ours.decode([128006, 50000]) == "<|start_header_id|><50000>"
    messages = [{"role": "user", "content": "Hi"}]
    assert ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == theirs.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )


def test_placement_checks_on_a_really_offloaded_model(tiny_llama, tmp_path):
    """Disk offload on this CPU: the same accelerate hooks as CPU offload beside a GPU (weights kept elsewhere,
    parameters meta, the forward on the main device). The checks pass on the true facts and catch false ones."""
    from accelerate import dispatch_model

    import explain
    from bench.gpu import placement_checks
    from explain.stages.placement import execution

    pipe = explain.pipeline(model=tiny_llama.folder)
    model = type(pipe.model)(pipe.model.config).eval()
    model.load_state_dict(pipe.model.state_dict())
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "disk",
    }
    dispatch_model(model, device_map=device_map, offload_dir=str(tmp_path))
    event = {"device_map": device_map, **execution(model, device_map)}
    ids = pipe.tokenizer.encode("Hello there")
    checks = placement_checks(model, event, ids)
    assert checks["passed"], checks["mismatches"]
    assert checks["stored"]["lm_head"] == ["disk"] and checks["ran_on"]["lm_head"] == "cpu"
    assert event["offloaded"] == ["model.layers.1", "lm_head"]
    wrong = {**event, "execution_devices": {**event["execution_devices"], "lm_head": "cuda:0"}, "offloaded": []}
    mismatches = placement_checks(model, wrong, ids)["mismatches"]
    assert any(m.startswith("lm_head ran on cpu") for m in mismatches)
    assert any(m.startswith("offloaded:") for m in mismatches)
    misplaced = {**event, "device_map": {**device_map, "model.layers.0": "disk"}}
    assert any("model.layers.0: planned on disk" in m for m in placement_checks(model, misplaced, ids)["mismatches"])


def test_host_reads_count_what_a_gpu_would_wait_for():
    weight = torch.randn(5)
    with HostReads([weight]) as reads:
        x = weight * 2
        int(x[0]), float(x[1]), x.tolist(), bool(x[0] > 0)  # four reads
        host = x.cpu()  # a fifth: the copy
        host.tolist(), host.numpy()  # the host copy costs nothing more
        x[x > 0]  # a boolean index: its size depends on the values
        on_device = torch.tensor([[3]], device="cpu")  # made on the device: a host-to-device copy
        (on_device + 1).tolist()  # and a read back
        (torch.tensor([1.0]) * 3).tolist()  # a host tensor: nothing
    assert reads.total == 7 and reads.syncs["tensor[mask]"] == 1 and reads.syncs["tolist()"] == 2
    assert sum(reads.host_to_device.values()) == 1


def test_a_generation_step_reads_the_device_a_few_times(tiny_llama):
    import explain

    pipe = explain.pipeline(model=tiny_llama.folder)
    greedy = count_step_syncs(pipe, "The quick brown fox", steps=3, do_sample=False)
    assert greedy["syncs_per_decode_step"] == 3 and greedy["host_to_device_per_decode_step"] == 0
    sampled = count_step_syncs(
        pipe, "The quick brown fox", steps=3, do_sample=True, top_k=20, top_p=0.9, temperature=0.7
    )
    assert sampled["processors"] == ["temperature", "top_k", "top_p"]
    assert sampled["syncs_per_decode_step"] <= 3 + 2 * len(sampled["processors"])


def test_entropy_is_the_distributions_entropy_in_bits(tiny_llama):
    import explain

    pipe = explain.pipeline(model=tiny_llama.folder)
    generation = pipe.start("The quick brown fox", max_new_tokens=3, do_sample=True, top_k=20, keep_logits=True)
    generation.run()
    for step, raw in zip(generation.steps, generation.raw_logits, strict=True):
        scores = raw[None]
        for processor in generation.processors:
            scores = processor(generation.input_ids[:, : step["position"]], scores)
        p = torch.softmax(scores[0], dim=-1)
        expected = float(-(p[p > 0] * p[p > 0].log()).sum()) / math.log(2)
        assert step["entropy_bits"] == pytest.approx(expected, rel=1e-5)
        assert 0 < step["entropy_bits"] <= math.log2(20) + 1e-6  # top_k=20 leaves at most 20 tokens
