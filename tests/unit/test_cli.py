"""The command line: GNU patch hand-over, exit codes, --json, and the file/key/model commands."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmpatch.cli import COMMANDS, find_gnu_patch, routes_to_gnu, run
from patches import make_patch_bytes
from tiny_models import save_tiny_model

BIN = Path(sys.executable).parent


def cli(capsys, *args):
    code = run(list(args), "patch")
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ GNU patch hand-over

DIFF = """--- a/hello.txt
+++ b/hello.txt
@@ -1 +1 @@
-hello
+hello, patched
"""


@pytest.fixture
def source_tree(tmp_path):
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "fix.diff").write_text(DIFF)
    return tmp_path


@pytest.mark.skipif(shutil.which("patch", path="/usr/bin:/bin") is None, reason="GNU patch is not installed")
def test_gnu_patch_dry_run_passes_through(source_tree):
    with open(source_tree / "fix.diff") as stdin:
        result = subprocess.run([BIN / "patch", "-p1", "--dry-run"], stdin=stdin, cwd=source_tree, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "checking file hello.txt" in result.stdout
    assert (source_tree / "hello.txt").read_text() == "hello\n"


@pytest.mark.skipif(shutil.which("patch", path="/usr/bin:/bin") is None, reason="GNU patch is not installed")
def test_gnu_patch_applies_and_reports_failure_codes(source_tree):
    with open(source_tree / "fix.diff") as stdin:
        applied = subprocess.run([BIN / "patch", "-p1"], stdin=stdin, cwd=source_tree, capture_output=True, text=True)
    assert applied.returncode == 0 and (source_tree / "hello.txt").read_text() == "hello, patched\n"
    with open(source_tree / "fix.diff") as stdin:  # applying twice fails: GNU's own exit code comes back
        again = subprocess.run([BIN / "patch", "-p1", "--forward"], stdin=stdin, cwd=source_tree, capture_output=True, text=True)
    assert again.returncode == 1 and "previously applied" in again.stdout


@pytest.mark.skipif(shutil.which("patch", path="/usr/bin:/bin") is None, reason="GNU patch is not installed")
def test_bare_patch_with_piped_stdin_and_version_go_to_gnu(source_tree):
    with open(source_tree / "fix.diff") as stdin:
        bare = subprocess.run([BIN / "patch", "--dry-run", "hello.txt"], stdin=stdin, cwd=source_tree, capture_output=True, text=True)
    assert bare.returncode == 0 and "hello.txt" in bare.stdout
    version = subprocess.run([BIN / "patch", "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert version.stdout.startswith("GNU patch")


def test_our_subcommands_stay_ours():
    result = subprocess.run([BIN / "patch", "keys", "list", "--json"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and json.loads(result.stdout) == []
    alias = subprocess.run([BIN / "llm-patch", "--version"], capture_output=True, text=True)
    assert "llm-patch" in alias.stdout


def test_routing_rules():
    assert not routes_to_gnu(["inspect", "x"], stdin_is_tty=False)
    assert not routes_to_gnu(["--help"], stdin_is_tty=False)
    assert routes_to_gnu(["-p1"], stdin_is_tty=True)
    assert routes_to_gnu(["--version"], stdin_is_tty=True)
    assert routes_to_gnu(["file.c", "fix.diff"], stdin_is_tty=True)
    assert routes_to_gnu([], stdin_is_tty=False)  # `patch < fix.diff`
    assert not routes_to_gnu([], stdin_is_tty=True)


def test_gnu_patch_lookup_skips_our_own_script(tmp_path, monkeypatch):
    ours = tmp_path / "ours" / "patch"
    ours.parent.mkdir()
    ours.write_text("#!/usr/bin/python\nfrom llmpatch.cli import patch_entry\n")
    ours.chmod(0o755)
    gnu = tmp_path / "gnu" / "patch"
    gnu.parent.mkdir()
    gnu.write_text("#!/bin/sh\n")
    gnu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{ours.parent}{os.pathsep}{gnu.parent}")
    monkeypatch.delenv("LLMPATCH_GNU_PATCH", raising=False)
    assert find_gnu_patch() == str(gnu)


def test_missing_gnu_patch_is_explained(tmp_path, monkeypatch, capsys):
    import llmpatch.cli as cli_module

    monkeypatch.setattr(cli_module, "FALLBACK_GNU_PATCHES", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("LLMPATCH_GNU_PATCH", raising=False)
    monkeypatch.setattr(sys, "argv", ["patch", "-p1"])
    with pytest.raises(SystemExit) as exited:
        cli_module.patch_entry()
    assert exited.value.code == 127
    assert "GNU patch is not installed" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys; from llmpatch.cli import run; run(['--help'], 'patch'); run(['inspect', '--help'], 'patch'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().endswith("False")
    assert "Exit codes" in result.stdout


def test_every_listed_command_loads(capsys):
    for name in COMMANDS:
        code, out, _ = cli(capsys, name, "--help")
        assert code == 0 and "Usage" in out, name


# ------------------------------------------------------------------ files and keys

def test_inspect_json_and_exit_code_for_invalid_files(tmp_path, capsys):
    good = tmp_path / "good.safetensors"
    good.write_bytes(make_patch_bytes(name="calm", version="1.2.0"))
    code, out, _ = cli(capsys, "inspect", str(good), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["manifest"]["name"] == "calm" and data["signer_key_id"] is None
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:-4])
    code, out, err = cli(capsys, "inspect", str(bad))
    assert code == 3 and out == "" and "error: tensor data is truncated" in err


def test_sign_then_inspect_and_tamper(tmp_path, capsys):
    file = tmp_path / "p.safetensors"
    file.write_bytes(make_patch_bytes())
    assert cli(capsys, "keys", "generate", "--label", "me")[0] == 0
    code, out, err = cli(capsys, "sign", str(file), "--json")
    assert code == 0 and Path(json.loads(out)["signature"]).exists()
    code, out, _ = cli(capsys, "verify-file", str(file), "--json")
    assert code == 0 and json.loads(out)["valid"] is True
    file.write_bytes(make_patch_bytes(seed=9))  # same name and version, other bytes
    code, out, err = cli(capsys, "verify-file", str(file))
    assert code == 4 and "file content does not match the signature" in err
    code, _, err = cli(capsys, "inspect", str(file))
    assert code == 4


def test_verify_file_without_signature_fails_closed(tmp_path, capsys):
    file = tmp_path / "p.safetensors"
    file.write_bytes(make_patch_bytes())
    code, _, err = cli(capsys, "verify-file", str(file))
    assert code == 4 and "no signature at" in err and "hint: sign the file" in err


def test_keys_export_import_between_stores(tmp_path, capsys, monkeypatch):
    cli(capsys, "keys", "generate", "--label", "publisher")
    code, out, _ = cli(capsys, "keys", "list", "--json")
    key_id = json.loads(out)[0]["key_id"]
    code, pem, _ = cli(capsys, "keys", "export", key_id[:8])
    assert code == 0 and "BEGIN PUBLIC KEY" in pem
    (tmp_path / "pub.pem").write_text(pem)
    monkeypatch.setenv("LLMPATCH_HOME", str(tmp_path / "other-user"))
    code, out, _ = cli(capsys, "keys", "import", str(tmp_path / "pub.pem"), "--label", "acme", "--json")
    assert code == 0 and json.loads(out) == {"key_id": key_id, "label": "acme", "private": False}


def test_usage_errors_exit_2(capsys):
    code, _, err = cli(capsys, "inspect")
    assert code == 2 and "Missing argument" in err


# ------------------------------------------------------------------ model commands (tiny model)

@pytest.fixture
def tiny_folder(tmp_path):
    return save_tiny_model(tmp_path / "tiny", "llama")


def test_new_inspect_generate_on_a_model_folder(tmp_path, tiny_folder, capsys):
    out_file = tmp_path / "calm.safetensors"
    code, out, err = cli(capsys, "new", "--model", str(tiny_folder), "--text", "w5 w6 w7", "-n", "4", "--name", "calm",
                         "--version", "0.1.0", "--domain", "toxicity", "-o", str(out_file), "--json")
    assert code == 0, err
    manifest = json.loads(out)["manifest"]
    code, fp_out, _ = cli(capsys, "fingerprint", str(tiny_folder), "--json")
    fingerprint = json.loads(fp_out)
    assert manifest["base_model"]["weights"] == fingerprint["weights"]
    assert manifest["n_virtual_tokens"] == 4 and manifest["hidden_size"] == 32
    code, out, err = cli(capsys, "generate", "--model", str(tiny_folder), "--patch", str(out_file), "--patch", str(out_file),
                         "--compare", "--raw", "--max-new-tokens", "4", "--json", "w8 w9", "w10")
    assert code == 0, err
    data = json.loads(out)
    assert data["patches"] == ["calm@0.1.0", "calm@0.1.0"] and len(data["results"]) == 2
    assert set(data["results"][0]) == {"prompt", "patched", "unpatched"}
    assert "is unsigned" in err


def test_generate_refuses_a_patch_for_another_model(tmp_path, tiny_folder, capsys):
    other = save_tiny_model(tmp_path / "other", "llama", seed=5)
    out_file = tmp_path / "p.safetensors"
    cli(capsys, "new", "--model", str(other), "--text", "w5", "-n", "2", "--name", "p", "--version", "1.0.0", "-o", str(out_file))
    code, _, err = cli(capsys, "generate", "--model", str(tiny_folder), "--patch", str(out_file), "--raw", "--max-new-tokens", "2", "w5")
    assert code == 4 and "same architecture, different weights" in err and "--force" in err
    code, _, err = cli(capsys, "generate", "--model", str(tiny_folder), "--patch", str(out_file), "--force", "--raw", "--max-new-tokens", "2", "w5")
    assert code == 0, err


def test_peft_export_import_commands(tmp_path, tiny_folder, capsys):
    out_file = tmp_path / "p.safetensors"
    cli(capsys, "new", "--model", str(tiny_folder), "--text", "w5", "-n", "3", "--name", "p", "--version", "1.0.0", "-o", str(out_file))
    assert cli(capsys, "export-peft", str(out_file), str(tmp_path / "adapter"))[0] == 0
    code, out, err = cli(capsys, "import-peft", str(tmp_path / "adapter"), "--model", str(tiny_folder), "--name", "back",
                         "--version", "1.0.0", "-o", str(tmp_path / "back.safetensors"), "--json")
    assert code == 0, err
    assert json.loads(out)["manifest"]["n_virtual_tokens"] == 3


def test_a_peft_prefix_tuning_adapter_imports_as_a_kv_patch_that_runs(tmp_path, tiny_folder, capsys):
    import torch
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_folder), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_()
    model.save_pretrained(tmp_path / "adapter")
    out_file = tmp_path / "kv.safetensors"
    code, out, err = cli(capsys, "import-peft", str(tmp_path / "adapter"), "--model", str(tiny_folder), "--name", "kv",
                         "--version", "1.0.0", "-o", str(out_file), "--json")
    assert code == 0, err
    manifest = json.loads(out)["manifest"]
    assert manifest["placement"] == "kv" and manifest["kv_layout"] == {"layers": 2, "kv_heads": 2, "head_dim": 8}
    assert manifest["format_version"] == 2 and manifest["hidden_size"] == 32
    code, out, err = cli(capsys, "inspect", str(out_file))
    assert code == 0 and "3 virtual tokens of keys and values at 2 layers x 2 KV heads x 8" in out and "192 (F32)" in out
    code, out, err = cli(capsys, "generate", "--model", str(tiny_folder), "--patch", str(out_file), "--compare", "--raw",
                         "--max-new-tokens", "3", "--json", "w8 w9")
    assert code == 0, err
    assert cli(capsys, "export-peft", str(out_file), str(tmp_path / "again"))[0] == 0
    config = json.loads((tmp_path / "again" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["num_layers"] == 2


def test_train_writes_a_kv_patch_when_asked(tmp_path, tiny_folder, capsys):
    from llmpatch.patchfile import read_patch

    reference = tmp_path / "reference.jsonl"
    reference.write_text("\n".join(json.dumps({"prompt": f"w{5 + i} w6", "response": "w40 w41"}) for i in range(8)))
    out_file = tmp_path / "kv.safetensors"
    code, out, err = cli(capsys, "train", "--domain", "bias", "--model", str(tiny_folder), "--reference", str(reference),
                         "--name", "kvbias", "--version", "1.0.0", "-o", str(out_file), "--placement", "kv",
                         "--sft-steps", "4", "--dpo-steps", "0", "--eval-every", "2", "-n", "3", "--threads", "1", "--json")
    assert code == 0, err
    manifest = read_patch(out_file).manifest
    assert (manifest.placement, manifest.prefix_width, manifest.n_virtual_tokens) == ("kv", 64, 3)
    assert manifest.provenance["config"]["placement"] == "kv" and json.loads(out)["best_step"] in (0, 2, 4)


# ------------------------------------------------------------------ progress bars

def test_progress_without_a_terminal_is_a_no_op_that_needs_no_tqdm(monkeypatch):
    import io

    from llmpatch.cli.output import NoProgress, progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal, as under pipes and CI
    bar = progress([1, 2, 3], total=3, desc="x")
    assert isinstance(bar, NoProgress) and list(bar) == [1, 2, 3]
    with progress(total=10, desc="file", unit="B") as bar:
        bar.update(4)
    bar.close()
    assert sys.stderr.getvalue() == ""


def test_progress_on_a_terminal_is_a_tqdm_bar(monkeypatch):
    import io

    from tqdm import tqdm

    from llmpatch.cli.output import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress([1, 2], total=2, desc="Verifying")
    assert isinstance(bar, tqdm) and not bar.disable
    assert list(bar) == [1, 2]
    assert "Verifying" in sys.stderr.getvalue()
