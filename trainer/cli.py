"""`patch train`: a base model, a domain's prompts and a reference in; a signed patch out."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..cli.output import emit_json, json_option, note, progress

MODEL_HELP = "Base model: a Hugging Face folder, a .gguf file, a Hub id (org/name), or `smollm2` (bundled)."
REFERENCE_HELP = (
    "The safer reference to learn from. Default per domain (offline): harmfulness = human-labelled refusals "
    "(XSTest) plus the model's own answers to safe prompts; bias = the model constrained from gendered words; "
    "toxicity = the model's own samples with profanity pushed down. Or: a JSONL file of prompt/response lines, "
    "another causal LM (folder, .gguf, Hub id), or `best-of-N` (the model's own safest of N samples)."
)


@click.command()
@click.option("--domain", "domains", multiple=True, required=True, type=click.Choice(["toxicity", "bias", "harmfulness"]),
              help="Safety domain; repeat to train one joint patch on several.")
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--reference", default=None, help=REFERENCE_HELP)
@click.option("--name", required=True, help="Patch name.")
@click.option("--version", "version", default="0.1.0", show_default=True, help="Semantic version of the patch.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Patch file to write.")
@click.option("-n", "--n-virtual-tokens", default=50, show_default=True)
@click.option("--placement", type=click.Choice(["input", "kv"]), default="input", show_default=True,
              help="input: a prefix on the input embeddings (the paper's patch). kv: keys and values at every "
                   "attention layer (prefix tuning): 20x the size, more control on small models; needs llm-patch >= 0.2 to apply.")
@click.option("--init-text", default="", help="Safety instruction for the semantic init [default: per domain].")
@click.option("--sft-steps", default=80, show_default=True)
@click.option("--dpo-steps", default=20, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--lr", default=3e-3, show_default=True, help="SFT learning rate (1e-3..5e-3 for input patches on harmfulness and bias; the kv toxicity example uses 3e-2).")
@click.option("--dpo-lr", default=3e-4, show_default=True, help="DPO learning rate (input patches overshoot above 3e-4; the kv toxicity example uses 1e-3).")
@click.option("--beta", default=0.1, show_default=True, help="DPO temperature.")
@click.option("--margin", default=0.3, show_default=True, help="DPO pairs: minimum scorer gap between rejected and chosen.")
@click.option("--threshold", default=0.2, show_default=True, help="DPO pairs: the chosen side must score at most this unsafe.")
@click.option("--max-prompts", default=400, show_default=True, help="Training prompts per domain.")
@click.option("--eval-every", default=10, show_default=True, help="Validate (and keep the best prefix) every N steps.")
@click.option("--refresh-every", default=20, show_default=True,
              help="Toxicity: every N SFT steps, add rows along the patched model's own continuations (0: never).")
@click.option("--seed", default=0, show_default=True)
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path), help="Save resumable checkpoints here.")
@click.option("--resume", is_flag=True, help="Continue the run saved in --checkpoint-dir.")
@click.option("--sign/--no-sign", default=False, help="Sign the patch with your key (writes FILE.sig).")
@click.option("--key", "key_prefix", default="", help="Signing key id [default: your only key].")
@click.option("--license", "license_", default="", help="License of the patch.")
@click.option("--description", default="", help="What the patch does.")
@click.option("--threads", type=int, help="torch threads [default: all cores].")
@json_option
def train_cmd(domains, model, reference, name, version, output, n_virtual_tokens, placement, init_text, sft_steps, dpo_steps, batch_size,
              lr, dpo_lr, beta, margin, threshold, max_prompts, eval_every, refresh_every, seed, checkpoint_dir, resume, sign, key_prefix,
              license_, description, threads, as_json):
    """Train a policy patch: SFT toward a safer reference, then DPO on safe-vs-unsafe pairs.

    Only the soft prefix trains; the model stays frozen. The best validated checkpoint is
    written, with its provenance and validation figures in the manifest. Example:

    \b
      patch train --domain harmfulness --model smollm2 --name refusal --version 1.0.0 \\
                  -o refusal.safetensors --sign
    """
    import torch

    from ..manifest import BaseModelRef, Manifest
    from ..model.loading import load_model
    from ..model.runtime import PatchedModel
    from .recipes import RecipeConfig
    from .references import build_reference_data
    from .train import INIT_TEXTS, TrainConfig, train

    torch.set_num_threads(threads or torch.get_num_threads())
    if resume and not checkpoint_dir:
        raise click.UsageError("--resume needs --checkpoint-dir")
    recipe = RecipeConfig(max_train_prompts=max_prompts, dpo_margin=margin, dpo_threshold=threshold, seed=seed)
    cfg = TrainConfig(domains=tuple(domains), n_virtual_tokens=n_virtual_tokens, placement=placement, init_text=init_text, sft_steps=sft_steps,
                      dpo_steps=dpo_steps, batch_size=batch_size, lr=lr, dpo_lr=dpo_lr, beta=beta, eval_every=eval_every,
                      refresh_every=refresh_every, seed=seed, recipe=recipe)
    note(f"Loading `{model}`...")
    loaded = load_model(model)
    patched = PatchedModel(loaded.model, loaded.tokenizer, loaded.fingerprint)

    note("Building training data (the reference's outputs, scored pairs)...")
    with progress(desc="data", unit="gen") as bar:
        datasets = build_reference_data(patched, cfg, reference, on_progress=bar.update)
    with progress(total=sft_steps + dpo_steps, desc="train", unit="step") as bar:
        def on_step(record):
            bar.update(1)
            shown = {"stage": record["stage"], "loss": record["loss"]}
            if "val_score" in record:
                shown["val"] = record["val_score"]
            bar.set_postfix(shown)
        result = train(patched, cfg, checkpoint_dir=checkpoint_dir, resume=resume, datasets=datasets, on_step=on_step)

    fp = loaded.fingerprint
    manifest = Manifest(
        name=name,
        version=version,
        base_model=BaseModelRef(fp.architecture, fp.weights, loaded.location.display_name),
        **cfg.manifest_fields(patched),
        domains=tuple(domains),
        provenance={
            "method": "sft+dpo" if dpo_steps else "sft",
            "config_digest": cfg.digest(),
            "config": cfg.to_dict(),
            "reference_model": reference or "default",
            "init_text": init_text or INIT_TEXTS[domains[0]],
            "data": result.data_summary,
            "best_step": result.best_step,
            "train_seconds": round(result.seconds, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        evaluation={"validation": result.best},
        license=license_,
        description=description or f"Policy patch for {', '.join(domains)} trained with llm-patch",
    )
    from ..cli.model_cmds import _write_and_report

    _write_and_report(manifest, result.prefix, output, sign, key_prefix, as_json=False)
    summary = {"file": str(output), "best_step": result.best_step, "validation": result.best, "seconds": round(result.seconds, 1),
               "history": result.history}
    if as_json:
        emit_json(summary)
    else:
        note(f"Best step {result.best_step} of {sft_steps + dpo_steps}; validation: {result.best}; {result.seconds / 60:.1f} min")
