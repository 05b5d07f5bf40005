"""A model folder with random weights in the exact shapes of a real checkpoint (no download is possible here).

    write_folder(folder, config, device)   config.json, generation_config.json, tokenizer.json (+ config files),
                                           model-0000N-of-0000M.safetensors and model.safetensors.index.json

Random weights cost the same time as real ones: the same bytes are read, copied and multiplied. They are drawn
where it is fastest (torch's normal_ on the GPU when there is one, straight in bfloat16), copied to the CPU shard by
shard and written with safetensors, sharded at 5 GB as the Hub's checkpoints are. A marker file written last says
the folder is complete, so a second run (or `--sections` on a warm machine) reuses it.

The tokenizer is a byte-level BPE, as Llama 3's, trained here on a few paragraphs with the tokenizers library and
stretched to Llama 3's 128,256 ids: filler entries ("<5000>") up to 128,000 that no merge produces, then Llama 3's
special tokens at their real ids (<|begin_of_text|> 128000, <|eot_id|> 128009, ...) and its post-processor (BOS
first). So prompts tokenize as text does, every id the random model picks decodes to something, and nothing is
needed from the Hub or from the embedded model's package (which the GPU machine does not have).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import torch

LLAMA_31_8B_INSTRUCT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "explain",
    "data",
    "configs",
    "meta-llama--Llama-3.1-8B-Instruct.json",
)
# Llama-3.1-8B-Instruct's generation_config.json, as published
GENERATION_CONFIG = {
    "bos_token_id": 128000,
    "do_sample": True,
    "eos_token_id": [128001, 128008, 128009],
    "temperature": 0.6,
    "top_p": 0.9,
}
SPECIAL = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128002: "<|reserved_special_token_0|>",
    128003: "<|reserved_special_token_1|>",
    128004: "<|finetune_right_pad_id|>",
    128005: "<|reserved_special_token_2|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
}
FIRST_SPECIAL = 128000
# Llama 3's chat format, shortened (no tools, no date line): enough for a chat prompt to work
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SHARD_BYTES = 5 * 10**9
# what the tokenizer is trained on: plain English, enough for a few thousand merges
CORPUS = [
    "The lighthouse stood at the end of a narrow spit of rock, and every evening its keeper climbed the one hundred "
    "and twelve steps to light the lamp. Ships passing in the night saw the beam sweep across the water and knew "
    "where the reef lay. ",
    "Write a story about a cat who lived in a bakery. Every morning the baker opened the shutters, the smell of "
    "warm bread drifted into the street, and the cat sat in the window to watch the people go by. ",
    "The history of the printing press begins with movable type. Here is a recipe for a simple vegetable soup: "
    "chop the onions, carrots and celery, soften them in butter, add the stock and simmer for twenty minutes. ",
    "In a distant galaxy, a small robot woke up and looked around. It did not remember its name, but it knew "
    "that it had a job to do, and that the stars outside the window were not the ones it had been built under. ",
    "A language model reads a sequence of tokens and predicts the next one. It turns each token into a vector, "
    "mixes the vectors with attention, and turns the last one into a score for every token of the vocabulary. "
    "The scores are called logits; a softmax turns them into probabilities, and the generation loop picks one. ",
] * 4
MARKER = "bench-model.json"


def llama_config(smoke: bool) -> dict:
    """Llama-3.1-8B-Instruct's config.json; in smoke mode the same structure (grouped-query attention with 4 query
    heads per key-value head, llama3 rope scaling, untied head, the full vocabulary) at a tiny width and depth."""
    with open(LLAMA_31_8B_INSTRUCT) as f:
        config = json.load(f)
    if smoke:
        config.update(
            hidden_size=64, intermediate_size=224, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2
        )
    return config


def parameter_shapes(config: dict) -> dict:
    """name -> shape, in the order of the Hub's checkpoint (as LlamaForCausalLM.state_dict() names them)."""
    hidden, inter, heads = config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]
    kv_heads, vocab = config["num_key_value_heads"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        shapes.update(
            {
                prefix + "input_layernorm.weight": (hidden,),
                prefix + "mlp.down_proj.weight": (hidden, inter),
                prefix + "mlp.gate_proj.weight": (inter, hidden),
                prefix + "mlp.up_proj.weight": (inter, hidden),
                prefix + "post_attention_layernorm.weight": (hidden,),
                prefix + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
                prefix + "self_attn.o_proj.weight": (hidden, heads * head_dim),
                prefix + "self_attn.q_proj.weight": (heads * head_dim, hidden),
                prefix + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def shard_plan(shapes: dict, element_bytes: int, limit: int = SHARD_BYTES) -> list[list[str]]:
    """Names grouped into shards of at most `limit` bytes, in order (a tensor larger than `limit` gets its own)."""
    shards: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, shape in shapes.items():
        nbytes = element_bytes * numel(shape)
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def numel(shape) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


def random_tensor(name: str, shape, std: float, dtype: torch.dtype, device: str, generator) -> torch.Tensor:
    """A norm's weight is ones (as a fresh model's); every other tensor N(0, std), drawn on `device`."""
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=dtype)
    tensor = torch.empty(shape, dtype=dtype, device=device)
    tensor.normal_(0.0, std, generator=generator)
    return tensor.cpu()


def write_folder(folder: str, config: dict, device: str = "cpu", seed: int = 0, log=print) -> dict:
    """Write (or reuse) a complete model folder; returns what was done and how long each part took."""
    from safetensors.torch import save_file

    wanted = {"config": config, "seed": seed, "format": 2}  # format: bump when what is written changes
    marker = os.path.join(folder, MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f).get("wanted") == wanted:
                with open(marker) as f:
                    done = json.load(f)
                log(f"reusing the model folder {folder} (written {done['written']})")
                return {**done["report"], "reused": True}
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    t0 = time.perf_counter()
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump(GENERATION_CONFIG, f, indent=2)
    write_tokenizer(folder, config["vocab_size"], config.get("max_position_embeddings"))
    tokenizer_s = time.perf_counter() - t0

    dtype = getattr(torch, config.get("torch_dtype") or "bfloat16")
    element = torch.tensor([], dtype=dtype).element_size()
    shapes = parameter_shapes(config)
    shards = shard_plan(shapes, element)
    generator = torch.Generator(device=device).manual_seed(seed)
    std = config.get("initializer_range", 0.02)
    index, total, draw_s, save_s = {}, 0, 0.0, 0.0
    for number, names in enumerate(shards, 1):
        filename = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        t1 = time.perf_counter()
        tensors = {name: random_tensor(name, shapes[name], std, dtype, device, generator) for name in names}
        t2 = time.perf_counter()
        save_file(tensors, os.path.join(folder, filename), metadata={"format": "pt"})
        t3 = time.perf_counter()
        draw_s, save_s = draw_s + t2 - t1, save_s + t3 - t2
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        total += nbytes
        index.update(dict.fromkeys(names, filename))
        log(f"  wrote {filename}: {nbytes / 1e9:.2f} GB (drawn {t2 - t1:.1f} s, saved {t3 - t2:.1f} s)")
        del tensors
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": index}, f, indent=2)
    report = {
        "folder": folder,
        "parameters": sum(numel(s) for s in shapes.values()),
        "bytes": total,
        "shards": len(shards),
        "dtype": str(dtype).replace("torch.", ""),
        "drawn_on": device,
        "tokenizer_s": tokenizer_s,
        "draw_s": draw_s,
        "save_s": save_s,
        "seconds": time.perf_counter() - t0,
        "reused": False,
    }
    with open(marker, "w") as f:  # last: a folder without it is incomplete and is written again
        json.dump({"wanted": wanted, "written": time.strftime("%Y-%m-%d %H:%M:%S"), "report": report}, f)
    return report


def write_tokenizer(folder: str, vocab_size: int, model_max_length: int | None = None) -> None:
    """A byte-level BPE trained on CORPUS with the tokenizers library, grown to `vocab_size` ids with Llama 3's
    special tokens (see the module doc). Deterministic: the same corpus gives the same file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(CORPUS, trainer)
    spec = json.loads(backend.to_str())
    vocab = spec["model"]["vocab"]
    if vocab_size <= FIRST_SPECIAL:
        raise ValueError(f"a Llama 3 tokenizer needs vocab_size > {FIRST_SPECIAL} (got {vocab_size})")
    for index in range(len(vocab), FIRST_SPECIAL):  # entries no merge produces: they only decode
        filler = f"<{index}>"
        if filler in vocab:
            raise ValueError(f"the trained vocabulary already holds {filler!r}")
        vocab[filler] = index
    special = {
        i: SPECIAL.get(i, f"<|reserved_special_token_{i - FIRST_SPECIAL - 8}|>")
        for i in range(FIRST_SPECIAL, vocab_size)
    }
    spec["added_tokens"] = [
        {
            "id": i,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, text in special.items()
    ]
    bos = SPECIAL[FIRST_SPECIAL]
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [FIRST_SPECIAL], "tokens": [bos]}},
    }
    backend = Tokenizer.from_str(json.dumps(spec))
    if backend.get_vocab_size(with_added_tokens=True) != vocab_size:
        raise ValueError(f"built {backend.get_vocab_size(with_added_tokens=True)} ids, wanted {vocab_size}")
    backend.save(os.path.join(folder, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": SPECIAL[128009],
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length or 131072,
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": bos, "eos_token": SPECIAL[128009]}, f, indent=2)
