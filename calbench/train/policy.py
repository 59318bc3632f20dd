"""The policy being trained: device and precision, the tokenizer, the model (a LoRA adapter on
the base, an adapter to continue, or every weight), and the prompts it is trained on — rendered
exactly as ``calbench eval`` renders them."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.models import resolve_model
from calbench.core.prompts import build_prompt
from calbench.train.config import RunConfig

# --------------------------------------------------------------------------------------------
# Device and precision
# --------------------------------------------------------------------------------------------


def pick_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {spec}: CUDA is not available here")
    return dev


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls are fast only with AVX512-BF16 / AMX. On an AVX2-only CPU they are
    emulated and ~10× slower than fp32 (measured: 16×32-token sampling 17 s fp32, 167 s bf16)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - older torch
        return False


def pick_dtype(spec: str, device: torch.device) -> torch.dtype:
    """The compute dtype for autocast and for the rollout copy."""
    if spec == "fp32":
        return torch.float32
    if spec == "bf16":
        return torch.bfloat16
    if spec != "auto":
        raise UsageError(f"--dtype must be auto, fp32 or bf16, not {spec!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked (weights and optimizer state stay fp32); a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Policy loading
# --------------------------------------------------------------------------------------------


@dataclass
class Policy:
    model: nn.Module  # PeftModel (LoRA) or the plain *ForCausalLM (full fine-tuning)
    tokenizer: Any
    base_spec: str  # what adapter_config.json's base_model_name_or_path must say
    base_path: str  # local folder of the base weights
    is_lora: bool
    device: torch.device
    dtype: torch.dtype  # autocast / rollout dtype

    @property
    def causal_lm(self) -> nn.Module:
        """The underlying *ForCausalLM (LoRA layers injected in place when is_lora)."""
        return self.model.get_base_model() if self.is_lora else self.model

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def load_tokenizer(path: str) -> Any:
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"  # prompts are left-padded so every response starts at one column
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(cfg: RunConfig, *, adapter_override: str | None = None) -> Policy:
    """Load ``cfg.model`` for training: a fresh LoRA on the base, an existing adapter to continue
    (``--model <adapter dir>``, e.g. the format warm-up), or every weight (full fine-tuning).
    ``adapter_override`` loads that adapter folder instead (resume from a checkpoint)."""
    resolved = resolve_model(cfg.model, hash_weights=False)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    if cfg.threads and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    base_spec = cfg.model
    adapter = adapter_override or resolved.adapter
    if resolved.kind == "adapter":
        base_spec = json.loads((Path(resolved.adapter) / "adapter_config.json").read_text())[
            "base_model_name_or_path"
        ]
        if cfg.full_finetune:
            raise UsageError("--full-finetune cannot continue a LoRA adapter; pass the base model")
    if cfg.full_finetune and adapter_override:
        model_path = adapter_override  # a full-model checkpoint folder
        adapter = None
    else:
        model_path = resolved.path
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        tok = load_tokenizer(resolved.path)
    except OSError as e:
        raise RuntimeFailure(f"loading {model_path}: {e}") from e
    model.config.use_cache = True
    if cfg.full_finetune:
        model.requires_grad_(True)
        is_lora = False
    else:
        # peft calls a transformers API that transformers 5 deprecates; nothing for us to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        if adapter:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            model = get_peft_model(model, _lora_config(cfg, model))
        is_lora = True
    model.to(device)
    return Policy(model, tok, base_spec, resolved.path, is_lora, device, dtype)


def _lora_config(cfg: RunConfig, model: nn.Module) -> LoraConfig:
    targets: Any = cfg.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    layers = None
    if cfg.lora_last_layers:
        if targets == "all-linear":  # peft wants explicit names with layers_to_transform
            targets = sorted(
                {
                    n.rsplit(".", 1)[-1]
                    for n, mod in model.named_modules()
                    if isinstance(mod, nn.Linear) and ".layers." in n
                }
            )
        n_layers = model.config.num_hidden_layers
        layers = list(range(max(0, n_layers - cfg.lora_last_layers), n_layers))
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def load_base_copy(policy: Policy) -> nn.Module:
    """A fresh *ForCausalLM with the base weights (no LoRA wrappers) on the policy's device."""
    m = AutoModelForCausalLM.from_pretrained(policy.base_path, dtype=torch.float32)
    return m.to(policy.device)


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


def render_prompt(tokenizer: Any, question: str, elicitation: str) -> str:
    """The exact text the model continues: chat template with generation prompt, then the
    prefill (``<answer>`` under the prefill elicitation) — the eval prompt, token for token."""
    p = build_prompt(question, elicitation)
    text = tokenizer.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
    return text + p.prefill


def prefill_for(elicitation: str) -> str:
    """What the prompt already holds of the response under ``elicitation`` ("" for tags)."""
    return build_prompt("x", elicitation).prefill


def encode_prompts(
    tokenizer: Any, texts: Sequence[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask (the chat template already holds the special tokens)."""
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc.input_ids.to(device), enc.attention_mask.to(device)
