"""Input attribution with Captum: how much each context token's embedding moved the log-probability of the
token a step picked.

Captum's LLMGradientAttribution wraps a gradient method on the embedding layer (LayerGradientXActivation:
gradient x input, one backward pass; LayerIntegratedGradients: integrated gradients, `steps` forward and backward
passes from a baseline), runs the model on the context and differentiates log p(chosen token). Both pass the
model-randomisation sanity check of Adebayo et al. (2018); the tests check it on explain's models. Integrated
gradients' scores add up to log p(token | context) - log p(token | baseline) as the steps grow (completeness);
`completeness_gap` says how far this many steps are from it. The baseline is token id 0 at every position, as
Captum's TextTokenInput has it. The result is local to this token and this context.
"""

from __future__ import annotations

import time

import torch

from ..errors import ExplainError
from ..generation.rows import float32_list

METHODS = {"gradient_x_input": "LayerGradientXActivation", "integrated_gradients": "LayerIntegratedGradients"}


class CaptumTokenizer:
    """The tokenizer interface Captum's TextTokenInput and LLMAttributionResult call, answered with the run's own
    token ids (so Captum attributes exactly the sequence the model saw, not a re-tokenised text)."""

    def __init__(self, tokenizer, ids: list[int]):
        self.tokenizer, self.ids = tokenizer, list(ids)
        self.spelled: dict[str, int] = {}  # a byte token's spelling, as decode gave it -> its id

    def encode(self, text, add_special_tokens=True, return_tensors=None):
        if return_tensors == "pt":  # TextTokenInput: the context as the model saw it
            return torch.tensor([self.ids])
        if text in self.spelled:
            return [self.spelled[text]]
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def __call__(self, text, return_offsets_mapping=False, add_special_tokens=True, **kwargs):
        if text in self.spelled:
            return {"input_ids": [self.spelled[text]], "offset_mapping": [(0, len(text))]}
        if not hasattr(self.tokenizer, "encode_with_details"):  # transformers' tokenizer (backend="transformers")
            encoded = self.tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
            return {"input_ids": encoded["input_ids"], "offset_mapping": [tuple(o) for o in encoded["offset_mapping"]]}
        details = self.tokenizer.encode_with_details(text, add_special_tokens=add_special_tokens)
        return {"input_ids": details["ids"], "offset_mapping": [tuple(o) for o in details["offsets"]]}

    def decode(self, ids, **kwargs):
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        ids = [ids] if isinstance(ids, int) else ids
        text = self.tokenizer.decode(ids)
        if len(ids) == 1 and "\ufffd" in text:
            # one byte of a multi-byte character: its spelling in the vocabulary ("Ã"), since Captum's pretty-token
            # fallback reads a lone U+FFFD as the first half of a pair and looks past the last id (an IndexError)
            spelled = self.tokenizer.convert_ids_to_tokens(ids)[0]
            if isinstance(spelled, str):
                self.spelled[spelled] = ids[0]  # and encoding it back gives that id (Captum re-encodes to align)
                return spelled
        return text

    def convert_ids_to_tokens(self, ids):
        return self.tokenizer.convert_ids_to_tokens(ids)

    def convert_tokens_to_ids(self, tokens):
        return self.tokenizer.convert_tokens_to_ids(tokens)


def attribute(
    model,
    tokenizer,
    ids: list[int],
    target: int,
    embedding,
    method: str = "gradient_x_input",
    steps: int = 32,
    progress=None,
) -> dict:
    """Attribution of log p(target | ids) to each position of `ids`, by `method` (see METHODS)."""
    try:
        from captum.attr import (
            LayerGradientXActivation,
            LayerIntegratedGradients,
            LLMGradientAttribution,
            TextTokenInput,
        )
    except ImportError:
        raise ExplainError(
            'attribution uses Captum, which is not installed: pip install "explain[inside]" (or pip install captum)'
        ) from None
    if method not in METHODS:
        raise ExplainError(f"unknown attribution method {method!r}; use one of {', '.join(METHODS)}")
    start = time.perf_counter()
    if method == "gradient_x_input":
        algorithm = LayerGradientXActivation(model, embedding)
        extra = {}
    else:
        algorithm = LayerIntegratedGradients(model, embedding)
        extra = {"n_steps": steps, "internal_batch_size": 1}
    adapter = CaptumTokenizer(tokenizer, ids)
    llm = LLMGradientAttribution(algorithm, adapter)
    if progress is not None:
        progress(f"attribution ({method}) over {len(ids)} tokens...")
    with torch.enable_grad():
        result = llm.attribute(TextTokenInput("", adapter), target=torch.tensor([target]), **extra)
    scores = result.seq_attr.detach().float().cpu()  # (positions,): summed over the embedding dimension
    total = float(scores.abs().sum()) or 1.0
    gap = None
    if method == "integrated_gradients":  # completeness: the scores should add up to f(input) - f(baseline)
        with torch.inference_mode():
            context = torch.tensor([ids], device=next(model.parameters()).device)
            ends = [torch.log_softmax(model(x).logits[0, -1].float(), -1)[target] for x in (context, 0 * context)]
        gap = float(scores.sum()) - float(ends[0] - ends[1])
    return {
        "method": method,
        "captum": METHODS[method],
        "target": target,
        "scores": float32_list(scores),
        "shares": float32_list(scores.abs() / total),
        "steps": steps if method == "integrated_gradients" else 1,
        "completeness_gap": gap,
        "seconds": time.perf_counter() - start,
    }
