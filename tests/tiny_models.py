"""Tiny causal LMs built in code (random weights, two layers), in three architectures, with a
word-level tokenizer, so unit tests run in seconds and never touch the Hub."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB_SIZE = 100
HIDDEN = 32
ARCHITECTURES = ("llama", "gemma3", "gpt2")


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2}
    vocab.update({f"w{i}": i for i in range(3, VOCAB_SIZE)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def tiny_model(arch: str = "llama", seed: int = 0, **overrides):
    """`overrides` go to the config, e.g. initializer_range=0.3 for a model whose outputs a
    prefix can move within a few steps (the default 0.02 gives near-uniform logits)."""
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB_SIZE, bos_token_id=None, eos_token_id=2, pad_token_id=1, **overrides)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, **common)
        model = LlamaForCausalLM(config)
    elif arch == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        config = Gemma3TextConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=8, max_position_embeddings=256, sliding_window=128,
                                  layer_types=["sliding_attention", "full_attention"], **common)
        model = Gemma3ForCausalLM(config)
    elif arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=256, **common)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(arch)
    return model.eval().requires_grad_(False)


def save_tiny_model(folder: Path, arch: str = "llama", seed: int = 0, dtype=torch.float32) -> Path:
    model = tiny_model(arch, seed).to(dtype)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
