"""--model resolution: the GGUF alias conversion (logits must match), adapters, errors."""

import json

import pytest

from calbench.core.errors import UsageError
from calbench.core.models import ALIASES, find_package_file, resolve_model


def test_converted_alias_has_the_gguf_models_logits(smollm2_path, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_package_file(ALIASES["smollm2-135m"]["package"], ALIASES["smollm2-135m"]["gguf"])
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    ids = tok(
        "Calibration means your confidence matches how often you are right.", return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        converted = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
        a = converted(ids).logits
        del converted
        original = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        b = original(ids).logits
    assert a.shape == b.shape
    assert torch.equal(a, b), f"max abs diff {(a - b).abs().max().item()}"
    # and the tokenizer round-trips identically
    tok_gguf = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert tok_gguf("héllo 12.5%").input_ids == tok("héllo 12.5%").input_ids


def test_alias_resolution_is_cached(smollm2_path):
    m = resolve_model("smollm2-135m")
    assert m.kind == "alias" and m.path == smollm2_path and len(m.weights_sha256) == 64


def test_local_folder_and_adapter(smollm2_path, tmp_path):
    local = resolve_model(smollm2_path, hash_weights=False)
    assert local.kind == "local"
    adapter = tmp_path / "my-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "smollm2-135m", "peft_type": "LORA"})
    )
    m = resolve_model(str(adapter), hash_weights=False)
    assert m.kind == "adapter" and m.path == smollm2_path and m.adapter == str(adapter)
    assert m.name == "smollm2-135m+my-adapter"


def test_adapter_without_base_is_a_usage_error(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(UsageError, match="base_model_name_or_path"):
        resolve_model(str(tmp_path))


def test_hub_id_is_passed_through():
    m = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert m.kind == "hub" and m.path == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("bad", ["smollm", "no such model", "./missing-folder/"])
def test_unknown_model_lists_what_is_valid(bad):
    with pytest.raises(UsageError, match="smollm2-135m"):
        resolve_model(bad)


def test_empty_folder_is_rejected(tmp_path):
    with pytest.raises(UsageError, match="config.json"):
        resolve_model(str(tmp_path))
