"""Backends: how ``--backend`` maps onto an lm-eval model class and its arguments.

=====================  =============================  ======================================
``--backend``          lm-eval model                  what it runs
=====================  =============================  ======================================
``hf`` (default)       ``hf``                         transformers on CPU or CUDA (PEFT)
``vllm``               ``vllm``                       in-process vLLM (the fast path on GPUs)
``openai-chat``        ``calbench-chat-completions``  any OpenAI-compatible chat server
``openai-completions`` ``calbench-completions``       any OpenAI-compatible completions server
=====================  =============================  ======================================

The two API backends are lm-eval's ``local-chat-completions`` and ``local-completions`` with
calbench's request policy (:mod:`calbench.eval.backends.openai`: retries, ``Retry-After``,
``--timeout``, only well-formed responses cached). The API key is read from an environment
variable (``--api-key-env``, default ``OPENAI_API_KEY``); credentials in ``--base-url``
(``https://user:password@host/v1``) are taken out of the URL and sent as HTTP Basic auth.
Neither is ever printed, logged or written (:mod:`calbench.eval.backends.secrets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calbench.core.errors import UsageError
from calbench.core.models import ResolvedModel
from calbench.eval.backends.secrets import command_line, strip_credentials

BACKENDS = ("hf", "vllm", "openai-chat", "openai-completions")
API_BACKENDS = ("openai-chat", "openai-completions")
SECRET_ARGS = ("basic_auth",)
__all__ = [
    "API_BACKENDS",
    "BACKENDS",
    "DEFAULT_TIMEOUT",
    "BackendCall",
    "build_backend",
    "command_line",
]
DEFAULT_TIMEOUT = 300.0  # seconds per API request attempt


@dataclass
class BackendCall:
    """Everything lm-eval's ``simple_evaluate`` needs to know about the model."""

    lm_eval_model: str
    model_args: dict[str, Any]
    batch_size: int | str
    extra_gen_kwargs: dict[str, Any] = field(default_factory=dict)
    endpoint: str | None = None  # URL without credentials, for error messages and the manifest

    def public_args(self) -> dict[str, Any]:
        """model_args safe to write down: without the URL credentials (``basic_auth``) and the
        name of the key's variable (recorded on its own)."""
        return {
            k: v
            for k, v in self.model_args.items()
            if k not in SECRET_ARGS and "key" not in k.lower()
        }


def default_device() -> str:
    import torch  # lazy: +0.9-3 s at import (python -X importtime); only the hf backend asks

    return "cuda" if torch.cuda.is_available() else "cpu"


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
    timeout: float = DEFAULT_TIMEOUT,
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
    if max_retries < 0:
        raise UsageError(f"--max-retries must be 0 or more, not {max_retries}")
    if not timeout > 0:  # also refuses nan
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout}")
    base, user, password = strip_credentials(base_url.strip())
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--base-url must be an http:// or https:// URL, not {base!r}")
    base = base.rstrip("/")
    common: dict[str, Any] = {
        "model": model_spec,
        "max_retries": max_retries,
        "timeout": timeout,
        "num_concurrent": num_concurrent,
        "max_gen_toks": max_new_tokens,
        "api_key_env": api_key_env,
    }
    if user is not None or password is not None:
        common["basic_auth"] = (user or "", password or "")
    # registers the lm-eval model classes; lazy: lm_eval's API models +0.9-1.1 s at import
    # (python -X importtime), which the hf and vllm backends never use
    import calbench.eval.backends.openai  # noqa: F401

    if backend == "openai-chat":
        url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        extra = {}
        if prefill:
            # The assistant turn must continue the prefilled "<answer>", not start a new one
            # (vLLM's chat API extension; other servers may ignore it).
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        return BackendCall("calbench-chat-completions", {**common, "base_url": url}, 1, extra, url)
    url = base if base.endswith("/completions") else base + "/completions"
    tok = tokenizer or (model.path if model is not None else None)
    if tok is None:
        raise UsageError(
            "--backend openai-completions renders the chat template locally and needs a "
            "tokenizer: pass --tokenizer (an alias, local folder or hub id)"
        )
    args = {
        **common,
        "base_url": url,
        "tokenizer_backend": "huggingface",
        "tokenizer": tok,
        # token ids: the prompt is rendered with the chat template locally, exactly as sent
        "tokenized_requests": True,
    }
    return BackendCall("calbench-completions", args, batch_size, {}, url)
