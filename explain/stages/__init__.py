"""The loading stages of `explain.pipeline(...)`, in the order they run (explain/pipeline.py lists them):

    tasks.py      registry   the task table transformers' pipeline() looks a task up in (stage "registry")
    hub.py        config     a file from a local folder or the Hugging Face cache, with its cache facts
    config.py     config     config.json or GGUF metadata, generation_config.json; config_checks.py bounds them
    tokenizer.py  tokenizer  tokenizer.json or the GGUF vocabulary; chat_template.py renders its chat template
    weights.py    weights    the checkpoint's tensors into explain's model class (the formats in explain/formats/)
    placement.py  placement  device, device_map="auto" and dtype, as from_pretrained places a model

Each stage module has one entry point of one shape, `run(loading: Loading, trace: Trace) -> None` (loading.py: the
call's arguments and what the stages before found; each stage emits its events and writes what it found onto it).
None imports the generation code, the backends or the widgets (tests/test_layers.py).

"registry" stays the name of the first stage in the events (what transformers' pipeline() does there: look the task
up in its task registry); the module is tasks.py, since the table is a table of tasks, not a registry of
same-signature entries like explain/formats/, explain/models/, the logits processors' and the strategies'.
"""
