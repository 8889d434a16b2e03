"""PEFT interop both ways: PEFT loads what we export and computes the same logits as we do;
we import what PEFT saves."""

import json

import numpy as np
import pytest
import torch
from peft import PeftModel, PromptTuningConfig, get_peft_model

from llmpatch.errors import InvalidPatchFile
from llmpatch.model.peft_interop import export_peft, import_peft
from llmpatch.model.runtime import PatchedModel
from patches import make_patch
from tiny_models import HIDDEN, tiny_model, tiny_tokenizer

PROMPT = [5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_peft_loads_our_export_and_gives_the_same_logits(tmp_path, arch):
    patch = make_patch(n=6, hidden=HIDDEN, seed=4)
    export_peft(patch, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(tiny_model(arch), tmp_path / "adapter").eval()
    with torch.no_grad():
        peft_logits = peft_model(input_ids=torch.tensor([PROMPT]), attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long)).logits
    peft_logits = peft_logits[0, -len(PROMPT):]  # PEFT returns the virtual positions too
    ours = PatchedModel(tiny_model(arch), tiny_tokenizer()).logits([PROMPT], [[patch]])[0]
    torch.testing.assert_close(ours, peft_logits, atol=1e-5, rtol=0)


def test_we_import_what_peft_saves(tmp_path):
    model = get_peft_model(tiny_model("llama"), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=7))
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_()
    model.save_pretrained(tmp_path / "adapter")
    prefix, config = import_peft(tmp_path / "adapter")
    assert prefix.shape == (7, HIDDEN) and config["peft_type"] == "PROMPT_TUNING"
    np.testing.assert_array_equal(prefix, model.prompt_encoder["default"].embedding.weight.detach().numpy())


def test_export_import_round_trip(tmp_path):
    patch = make_patch(n=6, hidden=HIDDEN)
    prefix, config = import_peft(export_peft(patch, tmp_path / "a"))
    np.testing.assert_array_equal(prefix, patch.prefix)
    assert config["num_virtual_tokens"] == 6 and config["token_dim"] == HIDDEN


def test_pickled_adapter_is_refused(tmp_path):
    folder = export_peft(make_patch(n=6, hidden=HIDDEN), tmp_path / "a")
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(InvalidPatchFile, match="pickled adapter_model.bin; llm-patch never loads pickle"):
        import_peft(folder)


def test_lora_adapter_is_refused(tmp_path):
    folder = export_peft(make_patch(n=6, hidden=HIDDEN), tmp_path / "a")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["peft_type"] = "LORA"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidPatchFile, match="adapter is 'LORA'; only PROMPT_TUNING and PREFIX_TUNING"):
        import_peft(folder)


def test_shape_disagreeing_with_config_is_refused(tmp_path):
    folder = export_peft(make_patch(n=6, hidden=HIDDEN), tmp_path / "a")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["num_virtual_tokens"] = 9
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidPatchFile, match=r"has shape \[6, 32\], the config says \[9, 32\]"):
        import_peft(folder)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # grouped-query attention, and plain multi-head
def test_peft_loads_our_kv_export_as_prefix_tuning_and_gives_the_same_logits(tmp_path, arch):
    from llmpatch.model.kv_prefix import model_kv_layout
    from llmpatch.patchfile import encode_patch, read_patch_bytes
    from patches import make_manifest

    layout = model_kv_layout(tiny_model(arch))
    prefix = np.random.default_rng(4).standard_normal((6, layout.width)).astype(np.float32)
    patch = read_patch_bytes(encode_patch(make_manifest(n=6, hidden=HIDDEN, placement="kv", kv_layout=layout), prefix))
    export_peft(patch, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["peft_type"] == "PREFIX_TUNING"
    peft_model = PeftModel.from_pretrained(tiny_model(arch), tmp_path / "adapter").eval()
    with torch.no_grad():
        peft_logits = peft_model(input_ids=torch.tensor([PROMPT]), attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long)).logits[0]
    ours = PatchedModel(tiny_model(arch), tiny_tokenizer()).logits([PROMPT], [[patch]])[0]
    torch.testing.assert_close(ours, peft_logits, atol=1e-5, rtol=0)


def test_prefix_tuning_with_a_projection_network_is_refused(tmp_path):
    from peft import PrefixTuningConfig

    model = get_peft_model(tiny_model("llama"), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=True))
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(InvalidPatchFile, match="stores a projection network, not its prefix"):
        import_peft(tmp_path / "adapter")
