"""The loading stages of transformers.pipeline(), observed while it runs, emitted as explain's events.

transformers loads in its own order (transformers/pipelines/__init__.py, pipeline()):

    resolve_revision -> AutoConfig.from_pretrained -> check_task -> load_model (from_pretrained: weights, device
    map, accelerate's dispatch, generation_config.json) -> _resolve_tokenizer (AutoTokenizer.from_pretrained)

and the events come in that order: config/file as each file is resolved (with the stage that asked for it),
registry/lookup when check_task returns, then config/config, weights/load and placement/place when the model is
loaded, tokenizer/load last. A stage's duration leaves out the files it resolved (they have their own events) and,
for weights, the time accelerate spent placing (placement's own).
"""

from __future__ import annotations

import inspect
import os
import time

import huggingface_hub

from ...errors import UnsupportedError
from ...stages import tasks
from ...trace import Trace
from .facts import config_facts, placement_facts, tokenizer_facts, weights_facts
from .patches import listening
from .quantized import emit_weights_details

PROGRESS_EVERY = 16  # weights/progress: one event per this many tensors, as the explain backend emits them


def _commit_of(path: str | None) -> str | None:
    """Cached files live at <cache>/models--org--name/snapshots/<commit>/<filename>."""
    if not path:
        return None
    parts = os.path.normpath(path).split(os.sep)
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def _arguments(function, args: tuple, kwargs: dict) -> dict:
    """The arguments of a call by parameter name, however transformers passed them."""
    return inspect.signature(function).bind_partial(*args, **kwargs).arguments


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


class LoadingObserver:
    """Listens inside one transformers.pipeline() call and emits explain's loading events into `trace`."""

    def __init__(self, trace: Trace, asked: dict, model_used: str | None, default_reason: str):
        self.trace, self.asked = trace, asked
        self.model_used, self.default_reason = model_used, default_reason
        self.stage = "pipeline"  # the stage running now: the file events say which stage asked for a file
        self.files: list[dict] = []
        self.file_seconds = {"config": 0.0, "weights": 0.0, "tokenizer": 0.0, "pipeline": 0.0}
        self.report = None  # transformers' LoadStateDictInfo
        self.plan: dict = {}
        self.placement_seconds = 0.0
        self.config = None
        self.config_time: tuple[float, float] | None = None
        self.emitted: set[str] = set()
        self.config_emitted = False

    def replacements(self) -> dict:
        return {
            ("transformers.pipelines", "check_task"): self._check_task,
            ("transformers.pipelines", "AutoConfig"): self._auto_config,
            ("transformers.pipelines", "load_model"): self._load_model,
            ("transformers.pipelines", "_resolve_tokenizer"): self._resolve_tokenizer,
            ("transformers.utils.hub", "cached_files"): self._cached_files,
            ("transformers.modeling_utils", "_get_resolved_checkpoint_files"): self._checkpoint_files,
            ("transformers.modeling_utils", "log_state_dict_report"): self._log_report,
            ("transformers.modeling_utils", "_get_device_map"): self._get_device_map,
            ("transformers.integrations.accelerate", "infer_auto_device_map"): self._infer_auto_device_map,
            ("transformers.modeling_utils", "accelerate_dispatch"): self._accelerate_dispatch,
            ("transformers.core_model_loading", "tqdm"): self._progress,
        }

    def listening(self):
        return listening(self.replacements())

    def emit(self, stage: str, kind: str, data: dict, start: float, duration: float) -> None:
        self.emitted.add(stage)
        self.trace.emit(stage, kind, data, start=start, duration=max(duration, 0.0))

    # -- registry ------------------------------------------------------------------------------------------------
    def _check_task(self, original):
        def check_task(task):
            start, t0 = time.time(), time.perf_counter()
            try:
                normalized, targeted, options = original(task)
            except KeyError:
                tasks.check_task(task)  # explain's table is transformers' (tests/test_registry.py): same verdict,
                raise  # with the suggestion of a close task name; re-raise if it somehow accepts it
            impl = targeted.get("impl")
            default_model, default_revision = (targeted.get("default") or {}).get("model", (None, None))
            data = {
                "task_asked": task,
                "task": normalized,
                "pipeline_class": impl.rsplit(".", 1)[-1] if isinstance(impl, str) else getattr(impl, "__name__", None),
                "model_class": ", ".join(c.__name__ for c in targeted.get("pt", ())),
                "default_model": default_model,
                "default_revision": default_revision,
                "type": targeted.get("type"),
                "alias_of": normalized if task != normalized else None,
                "historical_default": {"model": tasks.HISTORICAL_DEFAULT[0], "revision": tasks.HISTORICAL_DEFAULT[1]},
                "known_tasks": sorted(__import__("transformers").pipelines.SUPPORTED_TASKS),
                "runnable_tasks": list(tasks.RUNNABLE_TASKS),
                "model_used": self.model_used,
                "default_reason": self.default_reason,
                "backend": "transformers",
                "pipeline_class_used": "TracedTextGenerationPipeline",
                "trust_remote_code": bool(self.asked.get("trust_remote_code")),
            }
            if self.asked.get("gguf_file_used"):
                data.update(revision_used=self.asked.get("revision"), gguf_file_used=self.asked["gguf_file_used"])
            self.emit("registry", "lookup", data, start, time.perf_counter() - t0)
            if normalized not in tasks.RUNNABLE_TASKS:
                raise UnsupportedError(
                    f"{normalized!r} is a transformers task ({data['pipeline_class']}) that explain "
                    f"does not trace yet; explain traces {', '.join(tasks.RUNNABLE_TASKS)}."
                )
            return normalized, targeted, options

        return check_task

    # -- config --------------------------------------------------------------------------------------------------
    def _auto_config(self, original):
        observer = self

        class AutoConfig(original):  # what transformers.pipelines calls AutoConfig; the real one underneath
            @classmethod
            def from_pretrained(cls, *args, **kwargs):
                start, t0 = time.time(), time.perf_counter()
                with observer.in_stage("config"):
                    config = original.from_pretrained(*args, **kwargs)
                observer.config = config
                observer.config_time = (start, time.perf_counter() - t0 - observer.file_seconds["config"])
                return config

        AutoConfig.__qualname__ = original.__qualname__
        return AutoConfig

    def in_stage(self, stage: str):
        observer = self

        class Stage:
            def __enter__(self):
                self.previous, observer.stage = observer.stage, stage

            def __exit__(self, *exc):
                observer.stage = self.previous

        return Stage()

    def emit_config(self, model) -> None:
        if self.config is None or self.config_emitted:
            return
        if model is None and not getattr(self.config, "architectures", None):
            return  # the load failed and the config (a GGUF's) names no architecture: nothing true to say of it
        self.config_emitted = True
        start, duration = self.config_time or (time.time(), 0.0)
        files = [f for f in self.files if not f.get("absent")]
        config_file = next(
            (
                f["path"]
                for f in files
                if f["filename"].endswith("config.json") and f["filename"].rsplit("/", 1)[-1] == "config.json"
            ),
            None,
        )
        gguf = next((f["path"] for f in files if f["filename"].endswith(".gguf")), None)
        source = config_file or (f"GGUF metadata of {gguf}" if gguf else None)
        has_generation_file = any(f["filename"].endswith("generation_config.json") for f in files)
        generation = getattr(model, "generation_config", None) if model is not None else None
        model_class = type(model).__name__ if model is not None else None
        self.emit(
            "config",
            "config",
            config_facts(self.config, generation, source, has_generation_file, model_class),
            start,
            duration,
        )

    # -- files ---------------------------------------------------------------------------------------------------
    def _cached_files(self, original):
        def cached_files(*args, **kwargs):
            call = _arguments(original, args, kwargs)
            repo, filenames = str(call["path_or_repo_id"]), list(call["filenames"])
            revision, subfolder = call.get("revision"), call.get("subfolder") or ""
            local = os.path.isdir(repo)
            cache_dir = call.get("cache_dir")
            hits = {}
            if not local:
                for name in filenames:
                    found = huggingface_hub.try_to_load_from_cache(
                        repo, os.path.join(subfolder, name), cache_dir=cache_dir, revision=revision
                    )
                    hits[name] = "hit" if isinstance(found, str) else "known absent" if found is not None else "miss"
            start, t0 = time.time(), time.perf_counter()
            resolved = None
            try:
                resolved = original(*args, **kwargs)
                return resolved
            finally:
                duration = time.perf_counter() - t0
                self.file_seconds[self.stage] = self.file_seconds.get(self.stage, 0.0) + duration
                paths = [str(p) for p in (resolved or [])]
                for name in filenames:
                    wanted = os.path.join(subfolder, name)
                    path = next((p for p in paths if p.endswith(os.sep + wanted) or p == wanted), None)
                    self.emit_file(
                        repo,
                        name,
                        revision,
                        path,
                        "local folder" if local else hits.get(name),
                        start,
                        duration / max(len(filenames), 1),
                    )

        return cached_files

    def emit_file(self, repo, name, revision, path, cache, start, duration) -> None:
        data = {
            "repo": repo,
            "filename": name,
            "revision_asked": None if revision is None else str(revision),
            "commit": _commit_of(path),
            "cache": cache,
            "size": os.path.getsize(path) if path and os.path.isfile(path) else None,
            "path": path,
            "offline": _offline(),
            "stage": self.stage,
        }
        if path is None:
            data["absent"] = True
        self.files.append(data)
        self.emit("config", "file", data, start, duration)

    def _checkpoint_files(self, original):
        def get_resolved_checkpoint_files(*args, **kwargs):
            model = _arguments(original, args, kwargs)["pretrained_model_name_or_path"]
            found, metadata = original(*args, **kwargs)
            known = {f["path"] for f in self.files}
            for path in found or []:  # a local folder's weights are found with os.path, not through cached_files
                if path and str(path) not in known:
                    self.emit_file(
                        str(model), os.path.basename(str(path)), None, str(path), "local folder", time.time(), 0.0
                    )
            return found, metadata

        return get_resolved_checkpoint_files

    # -- weights and placement -----------------------------------------------------------------------------------
    def _load_model(self, original):
        def load_model(*args, **kwargs):
            model = _arguments(original, args, kwargs)["model"]
            start, t0 = time.time(), time.perf_counter()
            loaded = None
            try:
                with self.in_stage("weights"):
                    loaded = original(*args, **kwargs)
                return loaded
            finally:
                self._generation_file(model, loaded)
                self.emit_config(loaded)
                if loaded is not None and not isinstance(loaded, str):
                    duration = time.perf_counter() - t0
                    self.emit_model(
                        loaded,
                        start,
                        duration - self.file_seconds["weights"] - self.placement_seconds,
                        self.placement_seconds,
                    )

        return load_model

    def _generation_file(self, folder, model) -> None:
        """A local folder's generation_config.json is read with os.path, not through cached_files: from_pretrained
        reads it whenever it is there, except for a GGUF checkpoint (PreTrainedModel.from_pretrained,
        `adjust_generation_fn`, and GenerationConfig.from_pretrained)."""
        path = os.path.join(folder, "generation_config.json") if isinstance(folder, str) else None
        if (
            model is None
            or path is None
            or not os.path.isdir(folder)
            or self.asked.get("gguf_file_used")
            or any(f["path"] == path for f in self.files)
        ):
            return
        if os.path.isfile(path):
            with self.in_stage("weights"):
                self.emit_file(folder, "generation_config.json", None, path, "local folder", time.time(), 0.0)

    def emit_model(self, model, start: float, weights_seconds: float, placement_seconds: float) -> None:
        found = [
            f["path"]
            for f in self.files
            if f["stage"] == "weights"
            and not f.get("absent")
            and f["filename"].endswith((".safetensors", ".gguf", ".bin", ".pt", ".pth"))
        ]
        files = [p for p in found if not os.path.basename(p).startswith("adapter_model")]  # the base model's
        adapters = [os.path.dirname(p) for p in found if os.path.basename(p).startswith("adapter_model")]
        self.emit("weights", "load", weights_facts(model, self.report, files, weights_seconds), start, weights_seconds)
        emit_weights_details(self.trace, model, files, adapters[0] if adapters else None, start)
        self.emit(
            "placement",
            "place",
            placement_facts(model, self.asked, self.plan),
            time.time() - placement_seconds,
            placement_seconds,
        )

    def _log_report(self, original):
        def log_state_dict_report(*args, **kwargs):
            self.report = kwargs.get("loading_info", self.report)
            return original(*args, **kwargs)

        return log_state_dict_report

    def _get_device_map(self, original):
        def get_device_map(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                found = original(*args, **kwargs)
                self.plan["device_map"] = found
                return found
            finally:
                self.placement_seconds += time.perf_counter() - t0

        return get_device_map

    def _infer_auto_device_map(self, original):
        def infer_auto_device_map(*args, **kwargs):
            memory = _arguments(original, args, kwargs).get("max_memory")
            if memory is not None:
                # bytes; transformers' headroom (a share of the free memory) makes some floats: whole bytes here
                self.plan["max_memory"] = {str(k): int(v) if isinstance(v, float) else v for k, v in memory.items()}
            return original(*args, **kwargs)

        return infer_auto_device_map

    def _accelerate_dispatch(self, original):
        def accelerate_dispatch(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.placement_seconds += time.perf_counter() - t0
                self.plan["dispatched"] = True

        return accelerate_dispatch

    def _progress(self, original):
        observer = self

        def tqdm(iterable=None, *args, **kwargs):
            bar = original(iterable, *args, **kwargs)
            total = len(iterable) if hasattr(iterable, "__len__") else None
            name = next(
                (
                    os.path.basename(f["path"])
                    for f in observer.files
                    if f["stage"] == "weights" and not f.get("absent")
                ),
                kwargs.get("desc"),
            )

            def counted():
                done = 0
                for item in bar:
                    yield item
                    done += 1
                    if done % PROGRESS_EVERY == 0 or done == total:
                        observer.trace.emit("weights", "progress", {"file": name, "done": done, "total": total})

            return counted()

        return tqdm

    # -- tokenizer -----------------------------------------------------------------------------------------------
    def _resolve_tokenizer(self, original):
        def resolve_tokenizer(*args, **kwargs):
            tokenizer = _arguments(original, args, kwargs).get("tokenizer")
            start, t0 = time.time(), time.perf_counter()
            given = tokenizer is not None and not isinstance(tokenizer, (str, tuple))
            with self.in_stage("tokenizer"):
                loaded = original(*args, **kwargs)
            if loaded is not None:
                self.emit_tokenizer(loaded, start, time.perf_counter() - t0 - self.file_seconds["tokenizer"], given)
            return loaded

        return resolve_tokenizer

    def emit_tokenizer(self, tokenizer, start: float, duration: float, given: bool) -> None:
        files = [f for f in self.files if f["stage"] == "tokenizer" and not f.get("absent")]
        gguf = next((f["path"] for f in files if f["filename"].endswith(".gguf")), None)
        json_file = next((f["path"] for f in files if f["filename"].endswith("tokenizer.json")), None)
        if given:
            source, path = "given by the caller", None
        elif gguf:
            source, path = "gguf", gguf
        elif json_file:
            source, path = "tokenizer.json", os.path.dirname(json_file)
        else:
            source = "vocabulary files, converted by transformers"
            path = os.path.dirname(files[0]["path"]) if files else None
        data = tokenizer_facts(tokenizer, source, path)
        data["seconds"] = duration
        self.emit("tokenizer", "load", data, start, duration)
