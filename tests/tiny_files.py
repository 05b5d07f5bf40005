"""Tiny real model files written by the tests themselves, small enough to damage and fuzz by the thousand:
a one-layer Llama GGUF (~30 KB) with a byte-level BPE tokenizer and a chat template, written with the gguf package
exactly as llama.cpp's converter lays one out."""

from __future__ import annotations

import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HIDDEN, HEADS, KV_HEADS, FEED_FORWARD, CONTEXT = 8, 2, 1, 16, 64


def byte_tokens() -> list[str]:
    from explain.stages.tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def write_tiny_gguf(path, chat_template: str | None = CHAT_TEMPLATE, seed: int = 0) -> str:
    """A Llama GGUF with 1 layer, hidden size 8 and a 259-token vocabulary (256 bytes, one merge, two specials)."""
    import gguf

    tokens = byte_tokens() + ["Ġt", "<|im_start|>", "<|im_end|>"]
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 2) + [gguf.TokenType.CONTROL] * 2
    vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(1)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(vocab - 2)
    writer.add_eos_token_id(vocab - 1)
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    head_dim = HIDDEN // HEADS
    tensors = {
        "token_embd.weight": weight(vocab, HIDDEN),
        "blk.0.attn_norm.weight": np.ones(HIDDEN, np.float32),
        "blk.0.attn_q.weight": weight(HIDDEN, HIDDEN),
        "blk.0.attn_k.weight": weight(KV_HEADS * head_dim, HIDDEN),
        "blk.0.attn_v.weight": weight(KV_HEADS * head_dim, HIDDEN),
        "blk.0.attn_output.weight": weight(HIDDEN, HIDDEN),
        "blk.0.ffn_norm.weight": np.ones(HIDDEN, np.float32),
        "blk.0.ffn_gate.weight": weight(FEED_FORWARD, HIDDEN),
        "blk.0.ffn_up.weight": weight(FEED_FORWARD, HIDDEN),
        "blk.0.ffn_down.weight": weight(HIDDEN, FEED_FORWARD),
        "output_norm.weight": np.ones(HIDDEN, np.float32),
        "output.weight": weight(vocab, HIDDEN),
    }
    for name, values in tensors.items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def make_lora(model, folder, base: str | None = None, seed: int = 0, **options):
    """A LoRA adapter made by peft itself on a copy of `model` (random B, so it changes the logits), saved to `folder`
    with adapter_config.json naming `base` when given; returns the peft model (eval mode)."""
    import copy

    import peft
    import torch

    settings = {
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj", "down_proj"],
        "init_lora_weights": False,
        **options,
    }
    torch.manual_seed(seed)
    peft_model = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(**settings)).eval()
    if base is not None:
        peft_model.peft_config["default"].base_model_name_or_path = base
    peft_model.save_pretrained(folder)
    return peft_model
