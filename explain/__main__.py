"""Command line: python -m explain {provision, load, generate, trace, export, plan, lessons} ..."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from .console import printable


class UsageError(Exception):
    """A command line argparse cannot read; main prints it as one line (the usage with --debug) and exits 2."""

    def __init__(self, message: str, usage: str):
        super().__init__(message)
        self.usage = usage


class Parser(argparse.ArgumentParser):
    """argparse, whose errors (an unknown flag, a missing or mistyped value) are one line, as every other error
    of the command line is, instead of the usage (48 lines for generate) and the message."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}; see {self.prog} --help", self.format_usage())


def _pipeline_args(parser):
    parser.add_argument("--model", default=None, help="Hub repo id or local folder (default: the embedded SmolLM2)")
    parser.add_argument("--gguf-file", default=None, help="GGUF file inside the repo or folder")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--device", default=None)
    parser.add_argument("--device-map", default=None)
    parser.add_argument("--save-trace", default=None, metavar="FILE", help="write the trace as JSON")
    parser.add_argument(
        "--backend",
        default="explain",
        choices=("explain", "transformers"),
        help="explain: explain's readable model files (default); transformers: the real "
        'transformers.pipeline, traced (needs pip install "explain[transformers]")',
    )


# not the pipeline's 256 (generation/settings.PIPELINE_DEFAULTS): the terminal prints every step's table, and 40
# tokens fill a screen; --max-new-tokens or --max-length asks for more
TERMINAL_MAX_NEW_TOKENS = 40


def _cli_knobs() -> dict:
    from .generation.settings import KNOBS

    return {name: knob for name, knob in KNOBS.items() if knob.cli}


def _json_or_text(text: str):
    """A list, dict or number given as JSON ([[1, 2]], {"bias": 1.5}, 2); anything else is the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _knob_args(parser) -> None:
    """One flag per generation knob of the registry (generation/knobs.py and each logits processor's)."""
    types = {"int": int, "float": float, "json": _json_or_text}
    group = parser.add_argument_group("generation knobs", "every generate() argument explain runs; lists as JSON")
    for name, knob in _cli_knobs().items():
        flag = "--" + name.replace("_", "-")
        if knob.kind == "bool":
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=knob.help)
        else:
            metavar = "JSON" if knob.kind == "json" else knob.kind.upper()
            more = (
                f" (default here: {TERMINAL_MAX_NEW_TOKENS}, unless --max-length)" if name == "max_new_tokens" else ""
            )
            group.add_argument(
                flag, dest=name, type=types[knob.kind], default=None, metavar=metavar, help=knob.help + more
            )


def _load(args):
    import explain

    pipe = explain.pipeline(
        "text-generation",
        model=args.model,
        gguf_file=args.gguf_file,
        revision=args.revision,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
        backend=args.backend,
    )
    print(
        printable(
            f"backend {pipe.trace.meta.get('backend')}: {pipe.trace.meta.get('model_class')} from "
            f"{pipe.trace.meta.get('source_file')}"
        )
    )
    return pipe


def _check_output(path: str | None) -> None:
    """--save-trace names a file that can be written, checked before seconds of loading."""
    from .errors import ArgumentError, ExplainError

    if path is None:
        return
    if os.path.isdir(path):
        raise ArgumentError(f"--save-trace {path} is a folder; name a file, e.g. {os.path.join(path, 'trace.json')}")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ArgumentError(
            f"--save-trace {path} cannot be written ({parent} is not a folder you can write to); "
            "name a file in a folder you can write to"
        )
    if os.path.lexists(path):
        from .utils.files import writable_target

        try:
            writable_target(path, "--save-trace")  # a device (/dev/null, /dev/stdout), a FIFO: refused now
        except ExplainError as error:
            raise ArgumentError(str(error)) from None


def _one_line(error: BaseException) -> str:
    return printable(" ".join(str(error).split()))  # a message may quote a file's text: no control characters


def main(argv=None) -> int:
    debug = Parser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, show the full traceback instead of one line",
    )
    parser = Parser(
        prog="python -m explain",
        description=__doc__,
        epilog="An error a user can cause prints one line and exits with code 2 (--debug shows the traceback).",
    )
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("provision", help="put the embedded model into the Hugging Face cache", parents=[debug])
    load = sub.add_parser("load", help="load a model and print the loading stages as a timeline", parents=[debug])
    _pipeline_args(load)
    gen = sub.add_parser("generate", help="generate text, streaming tokens with their probabilities", parents=[debug])
    gen.add_argument("prompt")
    gen.add_argument("--chat", action="store_true", help="send the prompt as a user message through the chat template")
    gen.add_argument(
        "--sample",
        dest="do_sample",
        action="store_true",
        default=None,
        help="sample (do_sample=True) instead of greedy",
    )
    _knob_args(gen)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--steps", action="store_true", help="print a table of every step after the text")
    _pipeline_args(gen)
    show = sub.add_parser("trace", help="print a saved trace as a timeline", parents=[debug])
    show.add_argument("file")
    page = sub.add_parser(
        "export",
        help="write a saved trace as one self-contained HTML page (the dashboard's views; no kernel, no network)",
        parents=[debug],
    )
    page.add_argument("file", help="a trace saved with pipe.trace.save(path) or --save-trace")
    page.add_argument("output", help="the HTML file to write, e.g. run.html")
    page.add_argument("--run", type=int, default=None, help="only this call of the pipeline (default: every call)")
    plan = sub.add_parser(
        "plan",
        help='where device_map="auto" would put each layer of a model on some hardware '
        "(no weights needed); exits 1 when it does not fit",
        parents=[debug],
    )
    plan.add_argument("model", help="Hub repo id (shipped config or HF cache), folder, or config.json path")
    plan.add_argument(
        "--hardware",
        default=None,
        help="a profile: cpu-8gb, cpu-16gb, colab-t4, a100-80gb, "
        "2x-a100-80gb, 8x-a100-80gb, h100-80gb, apple-m-16gb, apple-m-32gb (default: this machine)",
    )
    plan.add_argument(
        "--max-memory", default=None, metavar="DEVICE=SIZE,...", help="instead of --hardware, e.g. 0=8GiB,cpu=30GiB"
    )
    plan.add_argument("--dtype", default=None, help="float32, bf16, fp16, int8, 4bit (default: the config's)")
    plan.add_argument("--strategy", default="auto", help="auto, balanced, balanced_low_0, sequential")
    plan.add_argument("--context", type=int, default=None, help="tokens per sequence for the KV cache")
    plan.add_argument("--batch", type=int, default=1, help="sequences for the KV cache")
    lessons = sub.add_parser(
        "lessons",
        help="run every lesson and write each, executed, as a static HTML page to re-read (no kernel needed)",
        parents=[debug],
    )
    lessons.add_argument("output", help="the folder to write the pages to (one .html per lesson and an index.html)")
    lessons.add_argument("--notebooks", default="notebooks", help="the lessons' folder (default: notebooks)")
    lessons.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these lessons, e.g. 00 03")
    lessons.add_argument("--timeout", type=int, default=900, help="seconds a cell may run (default: 900)")
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            print(error.usage, end="", file=sys.stderr)
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2

    from .console import TokenStream, print_steps, print_summary, print_timeline
    from .errors import ExplainError

    try:
        _check_output(getattr(args, "save_trace", None))
        if args.command == "generate":
            from .inputs import check_text

            check_text(args.prompt, "the prompt")  # before seconds of loading (a lone surrogate from a bad decode)
        if args.command == "provision":
            from .features.embedded import provision

            provision(quiet=False)
        elif args.command == "load":
            pipe = _load(args)
            print_timeline(pipe.trace, run=0)
            if args.save_trace:
                pipe.trace.save(args.save_trace)
        elif args.command == "generate":
            import torch

            pipe = _load(args)
            print_timeline(pipe.trace, run=0)
            if args.seed is not None:
                torch.manual_seed(args.seed)
            knobs = {name: getattr(args, name) for name in _cli_knobs() if getattr(args, name) is not None}
            knobs["do_sample"] = bool(knobs.get("do_sample"))
            if "max_new_tokens" not in knobs and "max_length" not in knobs:
                knobs["max_new_tokens"] = TERMINAL_MAX_NEW_TOKENS
            prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
            print()
            if not args.chat:
                print(args.prompt, end="", flush=True)
            pipe.trace.subscribe(TokenStream())
            out = None
            try:
                out = pipe(prompt, **knobs)
            except KeyboardInterrupt:
                print("\n[interrupted]")
            print("\n")
            if out is not None and (len(out) > 1 or not pipe.trace.filter("generation", "step", pipe.trace.run)):
                for i, record in enumerate(out):  # several sequences, or beam search (nothing streamed)
                    text = record["generated_text"]
                    print(
                        printable(f"[{i}] {text if isinstance(text, str) else text[-1]['content']}\n", keep_lines=True)
                    )
            if args.steps:
                print_steps(pipe.trace, pipe.trace.run)
            print_timeline(pipe.trace, run=pipe.trace.run)
            print_summary(pipe.trace, pipe.trace.run)
            if args.save_trace:
                pipe.trace.save(args.save_trace)
        elif args.command == "trace":
            from .trace import Trace

            trace = Trace.load(args.file)
            for run in trace.runs():  # the runs that have events, however large their ids
                print(f"-- run {run}")
                print_timeline(trace, run=run)
        elif args.command == "export":
            from .trace import TraceFileError

            try:
                from .widgets.export import export
            except ImportError as error:
                raise ExplainError(
                    f'export needs the notebook extra ({error}): pip install "explain[notebook]"'
                ) from None
            try:
                written = export(args.file, args.output, run=args.run)
            except TraceFileError as error:
                raise ExplainError(str(error)) from None
            print(f"wrote {written} ({os.path.getsize(written) / 2**20:.1f} MiB): open it in any browser")
        elif args.command == "lessons":
            from .features.lessons import build

            built = build(args.output, notebooks=args.notebooks, only=args.only, timeout=args.timeout)
            print(f"wrote {len(built)} lesson pages and index.html to {args.output}: open them in any browser")
        elif args.command == "plan":
            from .device_plan import plan_device_map

            result = plan_device_map(
                args.model,
                hardware=args.hardware,
                max_memory=args.max_memory,
                dtype=args.dtype,
                strategy=args.strategy,
                context=args.context,
                batch=args.batch,
            )
            print(printable(result, keep_lines=True))
            return 0 if result.fits else 1
    except (ExplainError, OSError) as error:  # OSError: a disk that is full, a file that cannot be written
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 (not foreseen: still one line, as the README promises; --debug shows where)
        if args.debug:
            traceback.print_exc()
        print(
            f"error: {_one_line(error) or type(error).__name__} ({type(error).__name__}, which explain did not "
            "foresee: run again with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
