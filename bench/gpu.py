"""`python -m bench.gpu`: the seed's call on a GPU, measured, with random weights in Llama-3.1-8B-Instruct's shapes.

    pipe = explain.pipeline("text-generation", model=FOLDER, model_kwargs={"torch_dtype": torch.bfloat16},
                            device_map="auto")
    pipe("Write a story about a cat", max_length=100)

    python -m bench.gpu                  the real run: about 5 minutes on one H200 (8 at most), 16 GB of weights
    python -m bench.gpu --smoke          every section on this machine's CPU with a tiny Llama of the same structure
                                         (well under a minute); results in a temporary folder
    python -m bench.gpu --sections offload,backend     rerun only those; the day's results file is updated

Sections, in order. Each one writes the results (JSON and markdown) when it ends, so a run cut short keeps its
figures, and each is timed and logged with a timestamp:
  weights   random bfloat16 weights in the checkpoint's shapes as a local safetensors folder with config.json,
            generation_config.json and a tokenizer (bench/synthetic.py); reused when complete
  load      the seed's call in a fresh process, explain.pipeline against transformers.pipeline: cold load
  speed     both pipelines in this process (the seed's call), the seed's generation itself, then explain and
            transformers side by side: prefill of a 512-token prompt, decode tokens/s over 128 tokens (explain
            traced at the default capture, untraced, and with the live widget sink; transformers' generate) in
            rotating turns; one decode forward of each model; the host syncs of explain's step
  fidelity  greedy ids against transformers for 32 tokens; every bfloat16 logit row within the tolerance derived
            in bench/fidelity.py; the derivation's noise model checked against a float32 copy when there is room
  offload   device_map="auto" with a max_memory that leaves part of the model on the CPU: the plan against
            transformers', accelerate's hooks, the placement event against where the weights really are and where
            each module really runs, decode speed of both
  backend   explain.pipeline(..., backend="transformers") when explain accepts it, else "not available"
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any

if __package__ in (None, ""):  # `python bench/gpu.py`: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

import torch  # noqa: E402

from bench import fidelity, gpu_report, synthetic  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
SECTIONS = ("weights", "load", "speed", "fidelity", "offload", "backend")
SEED_PROMPT = "Write a story about a cat"
SEED_MAX_LENGTH = 100
DTYPE = torch.bfloat16


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny Llama of the same structure, few tokens, on the CPU unless --device says "
        "otherwise; results go to a temporary folder unless --out names one",
    )
    parser.add_argument("--device", default=None, help="cuda (the default when there is a GPU) or cpu")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, from {', '.join(SECTIONS)} (weights always runs: it is reused)",
    )
    parser.add_argument(
        "--out", default=None, help="results folder (default bench/results, or a temporary folder with --smoke)"
    )
    parser.add_argument(
        "--mirror",
        default=None,
        help="a second folder that gets a copy of the results after every section (the device "
        "tool's $OUT, which is emptied before each call, while --out keeps them for reruns)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="where the weights are written (default: a folder under the "
        "system's temporary folder, reused by later runs)",
    )
    parser.add_argument("--new-tokens", type=int, default=128, help="decode length per run")
    parser.add_argument("--prompts", type=int, default=2, help="prompts each contender decodes (turns rotate)")
    parser.add_argument("--warmup-tokens", type=int, default=8)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--prefill-repeats", type=int, default=3)
    parser.add_argument("--forward-repeats", type=int, default=20)
    parser.add_argument("--fidelity-tokens", type=int, default=32)
    parser.add_argument(
        "--seed-max-length",
        type=int,
        default=SEED_MAX_LENGTH,
        help="max_length of the seed's own generation (prompt included, as the seed's call says)",
    )
    parser.add_argument(
        "--offload-tokens",
        type=int,
        default=16,
        help="decode length with part of the model on the CPU (each token copies it to the GPU)",
    )
    parser.add_argument(
        "--offload-fraction",
        type=float,
        default=0.85,
        help="GPU budget as a fraction of the weights' bytes in the offload section",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="sections not started by then are skipped (rerun them with --sections)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if "weights" not in args.sections:
        args.sections.insert(0, "weights")  # every other section needs the folder; a complete one is reused
    cuda = torch.cuda.is_available()
    args.device = args.device or ("cuda" if cuda else "cpu")
    if args.device.startswith("cuda") and not cuda:
        parser.error("--device cuda, but torch sees no CUDA device here (use --smoke for the CPU run)")
    if args.device == "cpu" and not args.smoke:
        parser.error("the real run is 16 GB of weights and 8 billion parameters: it needs a GPU. On a CPU, run --smoke")
    if args.smoke:
        args.new_tokens, args.prompts, args.warmup_tokens = 6, 1, 2
        args.prefill_tokens, args.prefill_repeats, args.forward_repeats = 48, 1, 3
        args.fidelity_tokens, args.offload_tokens, args.budget_s, args.seed_max_length = 8, 3, None, 16
        args.threads = args.threads or 1
        args.out = args.out or tempfile.mkdtemp(prefix="explain-bench-gpu-smoke-")
    args.out = args.out or RESULTS
    kind = "smoke" if args.smoke else "llama-3.1-8b-instruct"
    args.model = args.model or os.path.join(model_parent(args.smoke), f"explain-bench-{kind}")
    return args


def model_parent(smoke: bool) -> str:
    """Where the weights go: /dev/shm (memory) when it has room for the 16 GB with some to spare, since writing
    them to a slow disk is the run's longest wait; otherwise the temporary folder. Both libraries read the same
    files, so the comparison is fair either way."""
    if not smoke and os.path.isdir("/dev/shm"):
        try:
            if shutil.disk_usage("/dev/shm").free > 24 * 2**30:
                return "/dev/shm"
        except OSError:
            pass
    return tempfile.gettempdir()


# -- the machine -----------------------------------------------------------------------------------------------
def machine(device: str) -> dict:
    import accelerate
    import transformers

    import explain

    info = {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "explain": explain.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor() or platform.machine()
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(0)
        info.update(
            gpu=properties.name,
            gpu_memory_bytes=properties.total_memory,
            gpus=torch.cuda.device_count(),
            gpu_capability=f"{properties.major}.{properties.minor}",
            gpu_multiprocessors=properties.multi_processor_count,
        )
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        name = info["gpu"]
    else:
        name = f"{info['cpu']} {info['cpus']}cpu"
    info["slug"] = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return info


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_bytes() -> dict | None:
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    free, total = torch.cuda.mem_get_info()
    return {
        "allocated": torch.cuda.memory_allocated(),
        "peak_allocated": torch.cuda.max_memory_allocated(),
        "free": free,
        "total": total,
    }


# -- the run ---------------------------------------------------------------------------------------------------
class Run:
    """The results of one run, the models it holds, and its log."""

    def __init__(self, args):
        self.args, self.t0 = args, time.perf_counter()
        self.state: dict = {}
        started = datetime.datetime.now()
        info = machine(args.device)
        stem = f"{started:%Y-%m-%d}-{info['slug']}" + ("-smoke" if args.smoke else "")
        self.paths = {"json": os.path.join(args.out, stem + ".json"), "markdown": os.path.join(args.out, stem + ".md")}
        self.results = {
            "format": "explain-bench-gpu",
            "version": 1,
            "date": f"{started:%Y-%m-%d}",
            "started": started.isoformat(timespec="seconds"),
            "machine": info,
            "sections": {},
        }
        if os.path.isfile(self.paths["json"]):  # a rerun of some sections: keep the others' figures
            with open(self.paths["json"]) as f:
                previous = json.load(f)
            if previous.get("format") == self.results["format"]:
                self.results["sections"] = previous.get("sections", {})
                self.results["earlier_runs"] = previous.get("earlier_runs", []) + [previous.get("started")]
        self.results["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "mirror")}
        self.results["settings"]["dtype"] = "bfloat16"
        self.results["settings"]["placement"] = self.placement()

    def placement(self) -> dict:
        """The seed's placement: device_map="auto" (the GPU); on a machine without one, the CPU all the same."""
        if self.args.device.startswith("cuda") or not torch.cuda.is_available():
            return {"device_map": "auto"}
        return {"device": "cpu"}

    def log(self, message: str) -> None:
        elapsed = time.perf_counter() - self.t0
        print(f"[{datetime.datetime.now():%H:%M:%S} +{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def write(self) -> None:
        os.makedirs(self.args.out, exist_ok=True)
        self.results["duration_s"] = time.perf_counter() - self.t0
        self.results["summary"] = gpu_report.summary(self.results)
        for kind, text in (
            ("json", json.dumps(self.results, indent=1, allow_nan=False) + "\n"),
            ("markdown", gpu_report.markdown(self.results, os.path.basename(self.paths["json"]))),
        ):
            temporary = self.paths[kind] + ".partial"
            with open(temporary, "w") as f:
                f.write(text)
            os.replace(temporary, self.paths[kind])
            if self.args.mirror:
                os.makedirs(self.args.mirror, exist_ok=True)
                shutil.copyfile(self.paths[kind], os.path.join(self.args.mirror, os.path.basename(self.paths[kind])))

    def section(self, name: str, function) -> None:
        elapsed = time.perf_counter() - self.t0
        if name != "weights" and self.args.budget_s is not None and elapsed > self.args.budget_s:
            self.results["sections"][name] = {
                "status": "skipped",
                "reason": f"the run had used {elapsed:.0f} s of "
                f"its {self.args.budget_s:.0f} s budget; rerun with --sections {name}",
            }
            self.log(f"{name}: skipped (over the time budget)")
            self.write()
            return
        self.log(f"{name}: start")
        start = time.perf_counter()
        try:
            data = function(self)
            entry = {"status": "ok", **data}
        except Unavailable as error:
            entry = {"status": "not available", "reason": str(error)}
        except Exception as error:  # a section that breaks must not cost the others' figures
            entry = {
                "status": "error",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-4000:],
            }
            self.log(f"{name}: ERROR {type(error).__name__}: {error}")
        entry["seconds"] = time.perf_counter() - start
        entry["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        self.results["sections"][name] = entry
        self.write()
        self.log(f"{name}: {entry['status']} in {entry['seconds']:.1f} s")


class Unavailable(Exception):
    """A section that cannot run here; the message says why."""


# -- sections ----------------------------------------------------------------------------------------------------
def weights(run: Run) -> dict:
    config = synthetic.llama_config(run.args.smoke)
    draw_on = "cuda" if run.args.device.startswith("cuda") else "cpu"
    report = synthetic.write_folder(run.args.model, config, device=draw_on, log=run.log)
    run.state["config"] = config
    report["bytes_per_s"] = report["bytes"] / report["seconds"] if not report["reused"] else None
    return report


def explain_pipeline(run: Run, **extra):
    import explain

    model_kwargs = {"torch_dtype": DTYPE, **extra.pop("model_kwargs", {})}
    placement = extra.pop("placement", run.placement())
    return explain.pipeline("text-generation", model=run.args.model, model_kwargs=model_kwargs, **placement, **extra)


def transformers_pipeline(run: Run, **model_kwargs):
    import transformers

    return transformers.pipeline(
        "text-generation", model=run.args.model, model_kwargs={"torch_dtype": DTYPE, **model_kwargs}, **run.placement()
    )


def load(run: Run) -> dict:
    """Each library's cold load of the seed's call, in its own fresh process."""
    out: dict[str, Any] = {}
    for contender in ("explain", "transformers"):
        run.log(f"load: {contender} in a fresh process")
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_VERBOSITY="error",
            PYTHONWARNINGS="ignore",
            PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        )
        if run.args.threads:
            env["OMP_NUM_THREADS"] = str(run.args.threads)
        if not run.placement().get("device_map"):
            env["CUDA_VISIBLE_DEVICES"] = ""
        done = subprocess.run(
            [sys.executable, "-m", "bench.gpu_child", contender, run.args.model, "4"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{contender}'s cold load failed:\n{done.stderr[-3000:]}")
        out[contender] = json.loads(done.stdout.strip().splitlines()[-1])
        run.log(f"load: {contender} {out[contender]['load_s']:.1f} s")
    out["explain_vs_transformers"] = out["explain"]["load_s"] / out["transformers"]["load_s"]
    return out


def loaded(run: Run):
    """explain's and transformers' pipelines from the seed's call, loaded once for speed and fidelity."""
    if "explain" not in run.state:
        free_memory()
        for name, build in (("explain", explain_pipeline), ("transformers", transformers_pipeline)):
            t0 = time.perf_counter()
            run.state[name] = build(run)
            sync()
            run.state[f"{name}_load_s"] = time.perf_counter() - t0
            run.log(f"{name} pipeline loaded in this process in {run.state[f'{name}_load_s']:.1f} s")
            run.state[f"{name}_gpu"] = gpu_bytes()
    return run.state["explain"], run.state["transformers"]


def release(run: Run) -> None:
    for key in ("explain", "transformers", "contenders"):
        run.state.pop(key, None)
    free_memory()


def seed_generation(pipe, is_explain: bool, max_length: int = SEED_MAX_LENGTH) -> dict:
    """The seed's own call, sampling as Llama-3.1-Instruct's generation_config says (temperature 0.6, top_p 0.9)."""
    torch.manual_seed(0)
    sync()
    t0 = time.perf_counter()
    out = pipe(SEED_PROMPT, max_length=max_length, return_tensors=True)
    sync()
    seconds = time.perf_counter() - t0
    total = len(out[0]["generated_token_ids"])
    prompt = (
        len(pipe.tokenizer(SEED_PROMPT)["input_ids"]) if not is_explain else len(pipe.tokenizer.encode(SEED_PROMPT))
    )
    result: dict[str, Any] = {
        "seconds": seconds,
        "prompt_tokens": prompt,
        "new_tokens": total - prompt,
        "tokens_per_s": (total - prompt) / seconds,
    }
    if is_explain:
        end = pipe.trace.last("generation", "end").data
        settings = pipe.trace.last("generation", "settings").data
        result.update(
            stop_reason=end["stop_reason"],
            decode_tokens_per_s_forward_only=end["decode_tokens_per_s"],
            processors=[p["name"] for p in settings["processors"]],
            device=settings.get("device"),
        )
    return result


def speed(run: Run) -> dict:
    from bench import contenders as bench_contenders
    from bench import run as cpu_bench
    from bench import trace_size
    from bench.forward import forward_breakdown
    from bench.report import targets as cpu_targets
    from bench.syncs import count_step_syncs

    pipe, reference = loaded(run)
    transformers_model = reference.model.eval()
    out: dict[str, Any] = {
        "in_process_load_s": {"explain": run.state["explain_load_s"], "transformers": run.state["transformers_load_s"]},
        "gpu_memory_after_load": {"explain": run.state["explain_gpu"], "transformers": run.state["transformers_gpu"]},
    }
    placed = pipe.trace.last("placement", "place").data
    out["placement"] = {
        k: placed.get(k) for k in ("strategy", "devices", "main_device", "bytes_per_device", "offloaded", "reason")
    }
    run.log("speed: the seed's generation, explain then transformers (after two tokens each to warm up)")
    for warm in (pipe, reference):  # the first call of each sets up its kernels; the seed's call is timed after it
        warm("Hello", max_new_tokens=2, do_sample=False)
    out["seed_call"] = {
        "explain": seed_generation(pipe, True, run.args.seed_max_length),
        "transformers": seed_generation(reference, False, run.args.seed_max_length),
    }

    contenders: dict[str, Any] = {
        "explain_traced": bench_contenders.ExplainContender("explain_traced", pipe),
        "explain_untraced": bench_contenders.ExplainContender("explain_untraced", pipe, traced=False),
    }
    unavailable = {}
    try:
        contenders["explain_widget"] = bench_contenders.ExplainContender("explain_widget", pipe, widget=True)
    except bench_contenders.Unavailable as error:
        unavailable["explain_widget"] = f"not available: {error}"
    except ImportError as error:
        unavailable["explain_widget"] = f"not available: {error}"
    contenders["transformers"] = bench_contenders.TransformersContender(
        "transformers", transformers_model, reference.tokenizer
    )
    prompts = [(text, pipe.tokenizer.encode(text)) for text in cpu_bench.PROMPTS[: run.args.prompts]]
    run.log(f"speed: decode, {len(contenders)} contenders x {len(prompts)} prompt(s) x {run.args.new_tokens} tokens")
    args = argparse.Namespace(
        warmup_tokens=run.args.warmup_tokens,
        rounds=1,
        new_tokens=run.args.new_tokens,
        prefill_tokens=run.args.prefill_tokens,
        prefill_repeats=run.args.prefill_repeats,
    )
    runs, steps, tokens = cpu_bench.measure_decode(contenders, prompts, args)
    decode = {
        name: cpu_bench.summarize_decode(runs[name], steps[name])
        if name in runs
        else {"available": False, "reason": unavailable.get(name)}
        for name in cpu_bench.CONTENDERS
    }
    if "explain_widget" in contenders:
        decode["explain_widget"]["widget"] = contenders["explain_widget"].widget_entry
    out["decode"] = decode
    out["agreement_with_transformers"] = cpu_bench.agreement(tokens)
    out["trace_bytes_per_step"] = trace_size.saved_bytes_per_step(
        pipe.trace, {r["trace_run"] for r in runs["explain_traced"]}
    )
    run.log(f"speed: prefill of {run.args.prefill_tokens} tokens")
    out["prefill"] = cpu_bench.measure_prefill(contenders, pipe, args)
    run.log("speed: one decode forward of each model")
    out["forward_breakdown"] = forward_breakdown(
        pipe.model, transformers_model, prompts[0][1], repeats=run.args.forward_repeats
    )
    run.log("speed: host syncs of explain's step")
    out["host_syncs"] = {
        "greedy": count_step_syncs(pipe, SEED_PROMPT, steps=3, do_sample=False),
        "seed_sampling": count_step_syncs(pipe, SEED_PROMPT, steps=3),
    }
    out["targets"] = [
        t
        for t in cpu_targets(
            {
                "dtypes": {
                    "bfloat16": {"decode": decode, "cold_load": {}, "trace_bytes_per_step": out["trace_bytes_per_step"]}
                }
            }
        )
        if t["key"] in ("tracing_overhead", "widget_overhead", "trace_bytes_per_step")
    ]
    rate = {k: v.get("median_tokens_per_s") for k, v in decode.items()}
    out["ratios"] = {
        "explain_traced_vs_transformers_decode": _ratio(rate["explain_traced"], rate["transformers"]),
        "explain_untraced_vs_transformers_decode": _ratio(rate["explain_untraced"], rate["transformers"]),
        "explain_traced_vs_transformers_prefill": _ratio(
            out["prefill"]["transformers"]["prefill_s"], out["prefill"]["explain_traced"]["prefill_s"]
        ),
    }
    out["gpu_memory_end"] = gpu_bytes()
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None


def fidelity_section(run: Run) -> dict:
    pipe, reference = loaded(run)
    model = reference.model.eval()
    layers = run.state.get("config", synthetic.llama_config(run.args.smoke))["num_hidden_layers"]
    tokens = run.args.fidelity_tokens
    from bench.run import PROMPTS

    text = PROMPTS[0]
    generation = pipe.start(text, max_new_tokens=tokens, do_sample=False, eos_token_id=None, keep_logits=True)
    generation.run()
    pipe.finish(generation)
    prompt = generation.input_ids[0, : generation.prompt_length].tolist()
    explain_ids, explain_rows = generation.generated_ids, torch.stack(list(generation.raw_logits))  # (tokens, vocab)
    device = model.device
    ids = torch.tensor([prompt], device=device)
    with torch.inference_mode():
        generated = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=None,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=reference.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    reference_ids = generated.sequences[0, len(prompt) :].tolist()
    reference_rows = torch.cat(generated.logits).float().cpu()  # (tokens, vocab), raw (before processors)
    # teacher forcing: both models on the same sequence (the prompt and transformers' tokens), one forward each
    full = torch.tensor([prompt + reference_ids], device=device)
    keep = tokens + 1  # the prediction of every generated token, and of the one after
    with torch.inference_mode():
        forced_explain = pipe.model(full.to(pipe.device), logits_to_keep=keep).logits[0].float().cpu()
        forced_reference = model(full, logits_to_keep=keep).logits[0].float().cpu()
    bound = fidelity.tolerance(forced_reference, layers)
    limit = bound["tolerance"]
    same = next((i for i, (a, b) in enumerate(zip(explain_ids, reference_ids, strict=False)) if a != b), tokens - 1)
    steps = fidelity.difference(explain_rows[: same + 1], reference_rows[: same + 1])
    forced = fidelity.difference(forced_explain, forced_reference)
    out = {
        "prompt_tokens": len(prompt),
        "tokens": tokens,
        "explain_ids": explain_ids,
        "reference_ids": reference_ids,
        "tolerance": bound,
        "greedy": fidelity.greedy(explain_ids, reference_ids, explain_rows, reference_rows, limit),
        "decode_logits": {**steps, "rows": same + 1, "within_tolerance": steps["max"] <= limit},
        "teacher_forced_logits": {
            **forced,
            "rows": keep,
            "within_tolerance": forced["max"] <= limit,
            "argmax_equal": int((forced_explain.argmax(-1) == forced_reference.argmax(-1)).sum()),
        },
    }
    out["passed"] = (
        out["greedy"]["passed"]
        and out["decode_logits"]["within_tolerance"]
        and out["teacher_forced_logits"]["within_tolerance"]
    )
    run.log(
        f"fidelity: greedy {out['greedy']['equal_tokens']}/{tokens} equal, largest logit difference "
        f"{max(steps['max'], forced['max']):.4g} (tolerance {limit:.4g})"
    )
    out["noise_model"] = noise_model(run, pipe, model, full, keep, forced_explain, forced_reference, bound)
    if out["noise_model"].get("checked"):
        out["passed"] = out["passed"] and out["noise_model"]["passed"]
    return out


def noise_model(run: Run, pipe, model, full, keep, forced_explain, forced_reference, bound) -> dict:
    """bfloat16 against a float32 copy of the same weights, for each library: is the noise what the tolerance's
    derivation says? Upcasting changes the models in place, so they are released after."""
    weight_bytes = sum(p.numel() * p.element_size() for p in pipe.model.parameters())
    if torch.cuda.is_available() and torch.cuda.is_initialized() and str(model.device).startswith("cuda"):
        free = torch.cuda.mem_get_info()[0]
        if free < 2.3 * weight_bytes:
            return {
                "checked": False,
                "reason": f"a float32 copy needs {2 * weight_bytes / 2**30:.0f} GiB more; "
                f"{free / 2**30:.0f} GiB are free",
            }
    out: dict[str, Any] = {"checked": True}
    with torch.inference_mode():
        exact = pipe.model.float()(full.to(pipe.device), logits_to_keep=keep).logits[0].float().cpu()
        out["explain"] = fidelity.check_noise_model(forced_explain, exact, bound)
        reference_exact = model.float()(full, logits_to_keep=keep).logits[0].float().cpu()
        out["transformers"] = fidelity.check_noise_model(forced_reference, reference_exact, bound)
    out["float32_difference"] = fidelity.difference(exact, reference_exact)
    out["passed"] = out["explain"]["passed"] and out["transformers"]["passed"]
    release(run)  # the models are float32 now
    return out


def offload(run: Run) -> dict:
    import transformers

    from bench import contenders as bench_contenders
    from bench.run import PROMPTS

    release(run)
    weight_bytes = (
        sum(
            synthetic.numel(shape)
            for shape in synthetic.parameter_shapes(synthetic.llama_config(run.args.smoke)).values()
        )
        * 2
    )
    on_gpu = run.args.device.startswith("cuda")
    if on_gpu:
        max_memory = {0: int(weight_bytes * run.args.offload_fraction), "cpu": 4 * weight_bytes + 2**30}
        note = (
            f"GPU 0 may hold {run.args.offload_fraction:.0%} of the weights' {weight_bytes / 1e9:.2f} GB; "
            "the rest stays in CPU RAM"
        )
    else:
        max_memory = {"cpu": 4 * weight_bytes + 2**30}
        note = (
            "no GPU here: the budget names only the CPU, so the whole model is on it and nothing is offloaded "
            "(the split path is tested with disk offload in tests/test_devices.py)"
        )
    run.log(f"offload: max_memory {max_memory}")
    t0 = time.perf_counter()
    pipe = explain_pipeline(run, model_kwargs={"max_memory": dict(max_memory)}, placement={"device_map": "auto"})
    sync()
    explain_load = time.perf_counter() - t0
    event = pipe.trace.last("placement", "place").data
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        run.args.model, dtype=DTYPE, device_map="auto", max_memory=dict(max_memory)
    ).eval()
    sync()
    transformers_load = time.perf_counter() - t0
    checks = placement_checks(pipe.model, event, pipe.tokenizer.encode(SEED_PROMPT))
    # from_pretrained keeps hf_device_map only when the map has more than one entry; one entry is {"": device}
    reference_map = getattr(model, "hf_device_map", None) or {"": str(model.device)}
    plan_equal = {str(k): _device_name(v) for k, v in event["device_map"].items()} == {
        str(k): _device_name(v) for k, v in reference_map.items()
    }
    tokenizer = transformers.AutoTokenizer.from_pretrained(run.args.model)
    ids = pipe.tokenizer.encode(PROMPTS[0])
    contenders: dict[str, Any] = {
        "explain_traced": bench_contenders.ExplainContender("explain_traced", pipe),
        "transformers": bench_contenders.TransformersContender("transformers", model, tokenizer),
    }
    decode = {}
    for name, contender in contenders.items():
        contender.generate(PROMPTS[0], ids, 2)  # warm-up
        timing = contender.generate(PROMPTS[0], ids, run.args.offload_tokens)
        decode[name] = {
            "new_tokens": len(timing.ids),
            "decode_s": timing.decode_s,
            "tokens_per_s": timing.decode_tokens / timing.decode_s if timing.decode_s else None,
            "median_ms_per_token": 1000 * statistics.median(timing.step_s) if timing.step_s else None,
            "first_token_s": timing.first_token_s,
            "ids": timing.ids,
        }
        run.log(f"offload: {name} {decode[name]['tokens_per_s'] or 0:.2f} tokens/s")
    hooks = sum(1 for m in pipe.model.modules() if hasattr(m, "_hf_hook"))
    out = {
        "note": note,
        "max_memory": {str(k): v for k, v in max_memory.items()},
        "load_s": {"explain": explain_load, "transformers": transformers_load},
        "explain_event": {
            k: event.get(k)
            for k in (
                "strategy",
                "devices",
                "main_device",
                "budget",
                "headroom",
                "bytes_per_device",
                "offloaded",
                "execution_devices",
                "device_map",
                "reason",
            )
        },
        "transformers_device_map": {k: _device_name(v) for k, v in reference_map.items()},
        "plan_equals_transformers": plan_equal,
        "explain_hooks": hooks,
        "checks": checks,
        "decode": decode,
        "ids_equal": decode["explain_traced"]["ids"] == decode["transformers"]["ids"],
        "offloaded_bytes": event["bytes_per_device"].get("cpu", 0) if on_gpu else 0,
        "gpu_memory": gpu_bytes(),
    }
    out["passed"] = plan_equal and checks["passed"]
    del pipe, model, contenders
    free_memory()
    return out


def _device_name(device) -> str:
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def placement_checks(model, event: dict, ids: list) -> dict:
    """The placement event against the model as it is: where every module's weights are stored (a parameter's
    device, or for an offloaded one the tensor accelerate keeps for it), and where each module's forward ran,
    observed in a real forward (the device of its output: accelerate moves a module's inputs and weights to its
    execution device and leaves the output there)."""
    from explain.stages.placement import input_device

    mismatches = []
    stored = {}
    for name, planned in event["device_map"].items():
        module = model.get_submodule(name) if name else model
        devices = set()
        for parameter_name, parameter in module.named_parameters():
            if parameter.device.type != "meta":
                devices.add(str(parameter.device))
                continue
            full = f"{name}.{parameter_name}" if name else parameter_name
            devices.add(_offloaded_device(model, full))
        stored[name] = sorted(devices)
        if devices and devices != {_device_name(planned)}:
            mismatches.append(f"{name}: planned on {_device_name(planned)}, stored on {sorted(devices)}")
    observed = observe_execution(model, list(event["device_map"]), ids)
    for name, device in observed.items():
        said = (event.get("execution_devices") or {}).get(name)
        if device is not None and said != device:
            mismatches.append(f"{name} ran on {device}; the event says {said}")
    # offloaded: its weights are kept on one device and it ran on another
    offloaded = sorted(
        name for name, devices in stored.items() if devices and observed.get(name) and set(devices) != {observed[name]}
    )
    if offloaded != sorted(event.get("offloaded") or []):
        mismatches.append(f"offloaded: the event says {event.get('offloaded')}, the parameters say {offloaded}")
    if event.get("main_device") != str(input_device(model)):
        mismatches.append(f"main_device: the event says {event.get('main_device')}, inputs go to {input_device(model)}")
    layers = event.get("layers") or {}
    for name, device in layers.items():
        module = model.get_submodule(name) if name else model
        first = next(module.parameters(), None)
        if first is not None and first.device.type != "meta" and str(first.device) != device:
            mismatches.append(f"layers[{name}]: the event says {device}, its weights are on {first.device}")
    return {
        "modules": len(event["device_map"]),
        "stored": stored,
        "ran_on": observed,
        "mismatches": mismatches,
        "passed": not mismatches,
    }


def observe_execution(model, names: list, ids: list) -> dict:
    """module name -> the device of its output in one forward of `ids` (None when it made no tensor)."""
    from explain.stages.placement import input_device

    seen: dict[str, Any] = {}
    handles: list = []
    for name in names:

        def record(module, inputs, output, name=name):
            first = next(iter(_tensors(output)), None)
            seen.setdefault(name, str(first.device) if first is not None else None)

        handles.append((model.get_submodule(name) if name else model).register_forward_hook(record))
    try:
        with torch.inference_mode():
            model(torch.tensor([ids], device=input_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return {name: seen.get(name) for name in names}


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif hasattr(value, "__dataclass_fields__"):
        yield from _tensors([getattr(value, f) for f in value.__dataclass_fields__])


def _offloaded_device(model, name: str) -> str:
    """Where accelerate keeps an offloaded parameter: in the state dict of the weights map on its module's hook
    (CPU RAM; the device of the tensor kept there), or in its index of files (disk)."""
    owner, _, leaf = name.rpartition(".")
    hook = getattr(model.get_submodule(owner), "_hf_hook", None)
    for one in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        weights = getattr(one, "weights_map", None)
        if weights is None:
            continue
        key = getattr(weights, "prefix", "") + leaf
        loader = getattr(weights, "dataset", weights)
        state = getattr(loader, "state_dict", None) or {}
        if key in state:
            return str(state[key].device)
        if key in (getattr(loader, "index", None) or {}):
            return "disk"
    return "meta (no hook holds it)"


def backend(run: Run) -> dict:
    import inspect

    import explain
    from explain.errors import ExplainError

    signature = inspect.signature(explain.pipeline)
    if "backend" not in signature.parameters:
        raise Unavailable("explain.pipeline does not accept backend= yet (the transformers backend is being built)")
    release(run)
    t0 = time.perf_counter()
    try:
        pipe = explain_pipeline(run, backend="transformers")
    except (ExplainError, TypeError, NotImplementedError) as error:
        raise Unavailable(f'explain.pipeline(..., backend="transformers") refused: {error}') from None
    sync()
    out: dict[str, Any] = {"load_s": time.perf_counter() - t0, "type": type(pipe).__name__}
    from bench.run import PROMPTS

    for name, kwargs in (
        ("greedy", {"do_sample": False, "eos_token_id": None, "max_new_tokens": run.args.new_tokens}),
        ("seed_call", {"max_length": run.args.seed_max_length}),
    ):
        torch.manual_seed(0)
        sync()
        t0 = time.perf_counter()
        result = pipe(PROMPTS[0] if name == "greedy" else SEED_PROMPT, return_tensors=True, **kwargs)
        sync()
        seconds = time.perf_counter() - t0
        out[name] = {"seconds": seconds, "total_tokens": len(result[0]["generated_token_ids"])}
        trace = getattr(pipe, "trace", None)
        if trace is not None:
            steps = [e for e in trace.filter("generation", "step") if e.run == trace.run]
            out[name]["step_events"] = len(steps)
    speed = run.results["sections"].get("speed", {})
    reference = speed.get("decode", {}).get("transformers", {}).get("tokens_per_s")
    if reference and out["greedy"]["seconds"]:
        out["greedy"]["tokens_per_s_including_prefill"] = run.args.new_tokens / out["greedy"]["seconds"]
        out["greedy"]["vs_transformers_decode"] = out["greedy"]["tokens_per_s_including_prefill"] / reference
    del pipe
    free_memory()
    return out


FUNCTIONS = {
    "weights": weights,
    "load": load,
    "speed": speed,
    "fidelity": fidelity_section,
    "offload": offload,
    "backend": backend,
}


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    run = Run(args)
    run.log(
        f"bench.gpu on {run.results['machine'].get('gpu') or run.results['machine']['cpu']}; results: "
        f"{run.paths['json']}; sections: {', '.join(args.sections)}"
    )
    for name in SECTIONS:
        if name in args.sections:
            run.section(name, FUNCTIONS[name])
    release(run)
    run.write()
    print(gpu_report.markdown(run.results, os.path.basename(run.paths["json"])))
    run.log(f"wrote {run.paths['json']} and {run.paths['markdown']}")
    summary = run.results["summary"]
    return 0 if summary["sections_ok"] and summary["checks_passed"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
