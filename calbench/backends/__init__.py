"""Backends: how ``--backend`` maps onto an lm-eval model class and its arguments.

=====================  ===========================  ==========================================
``--backend``          lm-eval model                 what it runs
=====================  ===========================  ==========================================
``hf`` (default)       ``hf``                       transformers on CPU or CUDA (PEFT adapters)
``vllm``               ``vllm``                     in-process vLLM (the fast path on GPUs)
``openai-chat``        ``local-chat-completions``   any OpenAI-compatible ``/chat/completions``
``openai-completions`` ``local-completions``        any OpenAI-compatible ``/completions``
=====================  ===========================  ==========================================

API keys are read from an environment variable (``--api-key-env``, default ``OPENAI_API_KEY``)
and never written to logs or manifests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from calbench.errors import UsageError
from calbench.models import ResolvedModel

BACKENDS = ("hf", "vllm", "openai-chat", "openai-completions")
API_BACKENDS = ("openai-chat", "openai-completions")


@dataclass
class BackendCall:
    """Everything lm-eval's ``simple_evaluate`` needs to know about the model."""

    lm_eval_model: str
    model_args: dict[str, Any]
    batch_size: int | str
    extra_gen_kwargs: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None  # URL, for error messages and the manifest

    def public_args(self) -> dict[str, Any]:
        """model_args safe to write down (nothing secret is ever put in them, but be explicit)."""
        return {k: v for k, v in self.model_args.items() if "key" not in k.lower()}


def default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def build_backend(
    backend: str,
    model: ResolvedModel | None,
    *,
    model_spec: str,
    batch_size: int,
    max_new_tokens: int,
    seed: int,
    prefill: bool,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: str | None = None,
    max_retries: int = 5,
    num_concurrent: int = 4,
    gpu_memory_utilization: float = 0.8,
) -> BackendCall:
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "hf":
        assert model is not None
        device = device or default_device()
        args: dict[str, Any] = {
            "pretrained": model.path,
            "device": device,
            # fp32 on CPU: bf16 matmuls are slow on many CPUs and change greedy outputs.
            "dtype": dtype or ("float32" if device == "cpu" else "bfloat16"),
            "max_length": 4096,
        }
        if model.adapter:
            args["peft"] = model.adapter
        return BackendCall("hf", args, batch_size)
    if backend == "vllm":
        assert model is not None
        args = {
            "pretrained": model.path,
            "dtype": dtype or "auto",
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": 4096,
        }
        if model.adapter:
            args.update(enable_lora=True, lora_local_path=model.adapter, max_lora_rank=64)
        return BackendCall("vllm", args, batch_size if batch_size > 1 else "auto")
    # OpenAI-compatible servers
    if not base_url:
        raise UsageError(f"--backend {backend} needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    if api_key_env != "OPENAI_API_KEY" and os.environ.get(api_key_env):
        # lm-eval's API models read OPENAI_API_KEY; copy into this process's env only.
        os.environ["OPENAI_API_KEY"] = os.environ[api_key_env]
    base = base_url.rstrip("/")
    if backend == "openai-chat":
        url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        args = {"model": model_spec, "base_url": url, "max_retries": max_retries,
                "num_concurrent": num_concurrent, "max_gen_toks": max_new_tokens,
                "timeout": 300}
        extra = {}
        if prefill:
            # The assistant turn must continue the prefilled "<answer>", not start a new one
            # (vLLM's chat API extension; other servers may ignore it).
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        return BackendCall("local-chat-completions", args, 1, extra, url)
    url = base if base.endswith("/completions") else base + "/completions"
    tok = tokenizer or (model.path if model is not None else None)
    if tok is None:
        raise UsageError(
            "--backend openai-completions renders the chat template locally and needs a "
            "tokenizer: pass --tokenizer (an alias, local folder or hub id)"
        )
    args = {"model": model_spec, "base_url": url, "tokenizer_backend": "huggingface",
            "tokenizer": tok, "max_retries": max_retries, "num_concurrent": num_concurrent,
            "max_gen_toks": max_new_tokens, "timeout": 300,
            # token ids: the prompt is rendered with the chat template locally, exactly as sent
            "tokenized_requests": True}
    return BackendCall("local-completions", args, batch_size, {}, url)
