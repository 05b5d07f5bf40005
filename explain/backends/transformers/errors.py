"""transformers' loading errors, reworded as explain's: what is wrong, which file or argument, and the fix.

transformers raises OSError / ValueError with messages written for the Hub; explain's users get the same kinds of
error as from the explain backend (NotCachedError, CorruptFileError, UnsupportedError, ExplainError), with
transformers' own exception kept as the cause.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager

from ...errors import CorruptFileError, ExplainError, NotCachedError, UnsupportedError


def _last_wanted(observer) -> dict | None:
    """The last file transformers looked for and did not find."""
    return next((f for f in reversed(observer.files) if f.get("absent")), None) if observer is not None else None


def reworded(error: Exception, model, revision, observer) -> ExplainError | None:
    """An ExplainError for a known transformers loading failure, or None to let it through unchanged."""
    message = str(error)
    where = f"{model} (revision {revision or 'main'})"
    missing = _last_wanted(observer)
    name = f"{missing['filename']} of " if missing else ""
    if "couldn't connect to" in message and "cached files" in message or "offline mode" in message.lower():
        return NotCachedError(
            f"{name}{where} is not in the Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', '')}); download it once while online (`hf download {model}`), "
            "unset HF_HUB_OFFLINE, or pass a local folder as model="
        )
    if "is not a local folder and is not a valid model identifier" in message:
        return NotCachedError(
            f"{model} is neither a local folder nor a model in the Hugging Face cache (and the Hub "
            "cannot be reached or has no such repo); check the name, download it once while online, "
            "or pass a local folder as model="
        )
    named = re.search(r"[^\n]*no file named [^\n]*", message)
    if named:
        return ExplainError(
            f"{where} has no weights file transformers can read: {named.group(0).strip()} A model folder "
            "needs model.safetensors (or its shards and model.safetensors.index.json); write a complete "
            "one with pipe.save_pretrained(folder)"
        )
    if "does not appear to have a file named" in message or "does not appear to have files named" in message:
        return ExplainError(
            f"{where}: {message.split('. Checkout')[0]}. Copy the file from the original checkpoint, "
            "or write a complete folder with pipe.save_pretrained(folder)"
        )
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)) or "not a valid JSON file" in message:
        return CorruptFileError(
            f"a JSON file of {where} is truncated or corrupt ({message.splitlines()[0][:200]}); "
            "download it again or restore it from the original checkpoint"
        )
    if type(error).__name__ == "SafetensorError" or "deserializing header" in message or "invalid load key" in message:
        return CorruptFileError(
            f"a weights file of {where} is truncated or corrupt ({message[:200]}); download it "
            "again or re-save the model"
        )
    if "trust_remote_code" in message:
        return UnsupportedError(
            f"{where} needs Python code from its repository to load ({message.splitlines()[0][:200]}). "
            "If you trust that repository and have read its code, pass trust_remote_code=True"
        )
    if (
        "Unrecognized model" in message
        or "Unrecognized configuration class" in message
        or "does not recognize this architecture" in message
    ):
        return UnsupportedError(
            f"transformers does not know the architecture of {where} "
            f"({message.splitlines()[0][:200]}); upgrade transformers, or pass "
            "trust_remote_code=True if the repository ships its own code"
        )
    if "size mismatch" in message or "mismatched" in message.lower():
        return ExplainError(
            f"the weights of {where} do not fit its config ({message[:300]}); the config and the "
            "weights do not belong together (check hidden_size, intermediate_size, the head counts)"
        )
    quantization = _quantization_refusal(message)
    if quantization is not None:
        return quantization
    return None


CPU_QUANTIZATION = (
    "on a CPU, transformers runs TorchAoConfig(Int8WeightOnlyConfig()) or TorchAoConfig("
    "torchao.prototype.quantization.int4.PrototypeInt4WeightOnlyConfig(group_size=32)) (pip install "
    'torchao) and QuantoConfig(weights="int8" or "int4") (pip install optimum-quanto); the explain '
    'backend runs quantization="int8", "int4" or "gguf"'
)


def _quantization_refusal(message: str) -> ExplainError | None:
    """A quantization_config transformers cannot run here: bitsandbytes missing or without a GPU backend, or a
    quantization combined with a GGUF file (transformers/quantizers/auto.py, get_hf_quantizer)."""
    first = next(
        (
            line.strip()
            for line in message.splitlines()
            if "bitsandbytes" in line.lower() or "cannot combine Quantization" in line
        ),
        None,
    )
    if first is None:
        return None
    if "cannot combine Quantization" in first:
        return UnsupportedError(
            f"transformers cannot quantize a model it loads from a GGUF file ({first[:200]}); it dequantizes the "
            "GGUF to float first. Save the dequantized model as a folder (pipe.save_pretrained(folder)) and load "
            'that with model_kwargs={"quantization_config": ...}, or run the file\'s own 4-bit blocks with the '
            'explain backend\'s quantization="gguf"'
        )
    return UnsupportedError(
        f"quantization_config=BitsAndBytesConfig(...) cannot run on this machine: bitsandbytes needs a GPU backend "
        f"(CUDA, ROCm, XPU) or its CPU build, and transformers said: {first[:300]}. {CPU_QUANTIZATION[0].upper()}"
        f"{CPU_QUANTIZATION[1:]}"
    )


@contextmanager
def translated(model, revision, observer=None):
    """Re-raise transformers' known loading failures as explain's errors; others pass through unchanged."""
    try:
        yield
    except ExplainError:
        raise
    except Exception as error:  # OSError, ValueError, safetensors' SafetensorError, ...
        better = reworded(error, model, revision, observer)
        if better is None:
            raise
        raise better from error
