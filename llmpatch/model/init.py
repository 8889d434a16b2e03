"""Semantic initialisation: a prefix made of a safety instruction's own token embeddings
(the paper's init, which beat random init by a wide margin). Like PEFT's TEXT init, the
instruction's tokens repeat to fill `n_virtual_tokens`, or are cut."""

from __future__ import annotations

import math

import torch


def prefix_from_text(model, tokenizer, text: str, n_virtual_tokens: int) -> torch.Tensor:
    if n_virtual_tokens < 1:
        raise ValueError(f"n_virtual_tokens must be at least 1, got {n_virtual_tokens}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("the instruction text gives no tokens; give a sentence such as `Answer helpfully and safely.`")
    ids = (ids * math.ceil(n_virtual_tokens / len(ids)))[:n_virtual_tokens]
    with torch.no_grad():
        return model.get_input_embeddings()(torch.tensor(ids)).detach().clone().float()  # [n, hidden]
