"""The comparison the README table asks for: a PEFT LoRA (rank 1) trained on the same data,
batches and objectives as a patch's SFT stage. It changes weights inside the model (q/v
projections) instead of adding a prefix; its adapter is about as small as a 50-token patch
for a 576-wide model (30 layers x 2 x (576 + 192 or 576) x 1 ~ 64k parameters)."""

from __future__ import annotations

import random
import time

import torch

from .objectives import batch_loss
from .recipes import TrainingData
from .train import _balanced_batches


def train_lora(model, datasets: list[TrainingData], *, steps: int, batch_size: int = 8, lr: float = 1e-3, rank: int = 1,
               seed: int = 0, on_step=None):
    """Wrap `model` (a fresh copy: PEFT injects layers in place) with LoRA and train it.
    Returns the PeftModel, in eval mode."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    examples = [e for d in datasets for e in d.examples]
    batches = _balanced_batches(examples, batch_size, random.Random(seed))
    inner = peft_model.get_base_model()  # the HF model with LoRA layers injected
    started = time.perf_counter()
    for step in range(1, steps + 1):
        loss = batch_loss(inner, None, next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        if on_step:
            on_step({"step": step, "loss": round(loss.item(), 4)})
    peft_model.eval()
    peft_model.train_seconds = time.perf_counter() - started
    peft_model.n_trainable = sum(p.numel() for p in trainable)
    return peft_model
