"""One cold load of the seed's call in a fresh process: `python -m bench.gpu_child explain|transformers FOLDER`.

    pipe = <library>.pipeline("text-generation", model=FOLDER, model_kwargs={"torch_dtype": torch.bfloat16},
                              device_map="auto")

Times from before the first import to a pipeline ready to generate (every weight on its device: the GPU's queue
is drained before the clock stops), then generates a few tokens greedily. Prints one JSON line: the import time,
the load time, peak RSS (VmHWM) and the GPU's peak allocated memory.
"""

import time

START = time.perf_counter()  # before any import of the contender

import json  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

PROMPT = "Write a story about a cat"


def main(argv) -> dict:
    contender, folder = argv[0], argv[1]
    new_tokens = int(argv[2]) if len(argv) > 2 else 8
    import importlib

    import torch

    library: Any = importlib.import_module("explain" if contender == "explain" else "transformers")  # both: pipeline()
    if contender != "explain":
        library.logging.set_verbosity_error()
    imported = time.perf_counter()
    pipe = library.pipeline(
        "text-generation", model=folder, model_kwargs={"torch_dtype": torch.bfloat16}, device_map="auto"
    )
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    loaded = time.perf_counter()
    from bench.child import peak_rss_bytes

    result = {
        "contender": contender,
        "pid_start_to_import_s": imported - START,
        "load_s": loaded - START,
        "pipeline_s": loaded - imported,
        "peak_rss_after_load_bytes": peak_rss_bytes(),
        "gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
    }
    t0 = time.perf_counter()
    out = pipe(PROMPT, max_new_tokens=new_tokens, do_sample=False, return_tensors=True)
    if cuda:
        torch.cuda.synchronize()
    result.update(
        generate_s=time.perf_counter() - t0,
        generated_ids=len(out[0]["generated_token_ids"]),
        peak_rss_after_generate_bytes=peak_rss_bytes(),
    )
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
