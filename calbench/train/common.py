"""What PPO, GRPO and the warm-up share: loading the policy (LoRA or full), prompts, sampling,
response log-probs, the reference policy, held-out evaluation, logging, checkpoints.

Two tricks make a 135M model trainable on two CPU cores, and both are exact:

* **Shared prompt prefix.** A GRPO step samples G answers to each of B prompts. The prompt (≈125
  tokens of system + instruction) is run once per prompt, its key/value cache is repeated G
  times, and only the ≈20–40 response tokens run per sample — in the rollout *and* in the
  gradient pass (the cache keeps its autograd graph, so LoRA gradients flow through the prompt
  once). For G = 8 that is ≈4× fewer tokens through the network than padding B·G full
  sequences, which is what ``generate`` and TRL do.
* **Merged rollout copy.** Sampling goes through a plain copy of the model whose weights are
  ``W + (α/r)·B·A`` — no LoRA wrappers in the 30-layer decode loop; it is re-synced before each
  rollout. On GPU (or a CPU with native bf16) that copy is bf16.

Logits are computed only at response positions (the ``logits_to_keep`` idea), in fp32.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import pickle
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from calbench import metrics
from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.prompts import build_prompt
from calbench.core.records import atomic_write_json, git_commit

# --------------------------------------------------------------------------------------------
# Run configuration shared by every stage (the algorithm files add their own hyperparameters)
# --------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    model: str = "smollm2-135m"  # --model spec: alias, HF folder, or a PEFT adapter to continue
    out_dir: str = "runs/train"
    method: str = "rlcr"  # reward: rlvr | rlcr | brier | log | asymmetric (see rewards.py)
    elicitation: str = "tags"  # prompt format, identical to `calbench eval --elicitation`
    steps: int = 50  # optimizer steps (RL) / ignored by the warm-up, which counts epochs
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    # LoRA (peft). full_finetune=True trains every weight instead.
    full_finetune: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"
    # LoRA on the last N decoder layers only (0: all). Backward then stops N layers deep: on a
    # slow CPU that is most of the step (30 layers in SmolLM2-135M).
    lora_last_layers: int = 0
    # RL questions: "stream" (reasoning-gym's order) or "stratified" (difficulty bins take turns,
    # so every step of 4k questions holds k of each bin; see data.stratified_train_items)
    train_order: str = "stream"
    # held-out evaluation, logging, checkpoints
    eval_every: int = 10  # steps between held-out evaluations (0: only at the end)
    eval_size: int = 64  # held-out questions (greedy decoding)
    eval_split: str = "test"  # "test" (the eval task's held-out pool) | "val" (for choosing recipes)
    save_every: int = 10  # steps between checkpoints
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # autocast / rollout dtype: auto | fp32 | bf16
    threads: int = 0  # torch CPU threads (0: leave torch's default)
    progress: bool = True  # rich progress bar

    def to_dict(self) -> dict:
        return asdict(self)


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``values``, ignoring keys it does not have."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


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
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"  # prompts are left-padded so every response starts at one column
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(cfg: RunConfig, *, adapter_override: str | None = None) -> Policy:
    """Load ``cfg.model`` for training: a fresh LoRA on the base, an existing adapter to continue
    (``--model <adapter dir>``, e.g. the format warm-up), or every weight (full fine-tuning).
    ``adapter_override`` loads that adapter folder instead (resume from a checkpoint)."""
    from transformers import AutoModelForCausalLM

    from calbench.core.models import resolve_model

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
        import warnings

        from peft import LoraConfig, PeftModel, get_peft_model

        # peft calls a transformers API that transformers 5 deprecates; nothing for us to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        if adapter:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            targets: Any = cfg.lora_targets
            if targets != "all-linear":
                targets = [t.strip() for t in targets.split(",") if t.strip()]
            layers = None
            if cfg.lora_last_layers:
                if targets == "all-linear":  # peft wants explicit names with layers_to_transform
                    targets = sorted({n.rsplit(".", 1)[-1] for n, mod in model.named_modules()
                                      if isinstance(mod, nn.Linear) and ".layers." in n})
                n_layers = model.config.num_hidden_layers
                layers = list(range(max(0, n_layers - cfg.lora_last_layers), n_layers))
            lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                              lora_dropout=cfg.lora_dropout, target_modules=targets,
                              layers_to_transform=layers, task_type="CAUSAL_LM")
            model = get_peft_model(model, lcfg)
        is_lora = True
    model.to(device)
    return Policy(model, tok, base_spec, resolved.path, is_lora, device, dtype)


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
    return build_prompt("x", elicitation).prefill


def encode_prompts(tokenizer: Any, texts: Sequence[str], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask (the chat template already holds the special tokens)."""
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc.input_ids.to(device), enc.attention_mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded batch: 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


# --------------------------------------------------------------------------------------------
# KV cache helpers (transformers 5 renamed past_key_values -> cache)
# --------------------------------------------------------------------------------------------


def _cache_kwarg(module: nn.Module) -> str:
    if hasattr(module, "get_base_model"):  # a PeftModel's forward takes **kwargs
        module = module.get_base_model()
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(config: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # older transformers
        return DynamicCache()


# --------------------------------------------------------------------------------------------
# Sampling (rollouts)
# --------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B*G, T] right-padded; sample i*G + j answers prompt i
    response_mask: torch.Tensor  # [B*G, T] 1 for generated tokens (EOS included)
    group: int  # G
    completions: list[str]  # decoded responses, special tokens dropped, prefill not included
    seconds: float = 0.0
    truncated: float = 0.0  # fraction of responses cut by max_new_tokens (no EOS)

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())


def _sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        return idx.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample(model: nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *,
           group: int, max_new_tokens: int, eos_id: int, pad_id: int, temperature: float = 1.0,
           top_p: float = 1.0, generator: torch.Generator | None = None, min_new_tokens: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``group`` continuations of each prompt with a KV cache: the prompt is run once and
    its cache repeated ``group`` times. Returns right-padded ids [B*G, T] and their mask.
    ``min_new_tokens`` forbids EOS before that many tokens (fixed lengths for benchmarks)."""
    kw = _cache_kwarg(model)
    cache = new_cache(model.config)
    pos = positions(prompt_mask)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos,
                use_cache=True, logits_to_keep=1, **{kw: cache})
    cache.batch_repeat_interleave(group)
    logits = out.logits[:, -1].repeat_interleave(group, 0)
    mask = prompt_mask.repeat_interleave(group, 0)
    pos = pos[:, -1:].repeat_interleave(group, 0)
    n = mask.shape[0]
    done = torch.zeros(n, dtype=torch.bool, device=prompt_ids.device)
    tokens, alive = [], []
    for t in range(max_new_tokens):
        if t < min_new_tokens:
            logits = logits.clone()
            logits[:, eos_id] = float("-inf")
        nxt = _sample_next(logits, temperature, top_p, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        alive.append(~done)
        done = done | (nxt == eos_id)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                    use_cache=True, **{kw: cache})
        logits = out.logits[:, -1]
    return torch.stack(tokens, 1), torch.stack(alive, 1).long()


class RolloutModel:
    """A plain copy of the policy for sampling: LoRA merged in (``W + scale·B·A``), in the
    rollout dtype, re-synced from the trained weights with :meth:`sync` before every rollout."""

    def __init__(self, policy: Policy):
        import copy

        self.policy = policy
        base = policy.causal_lm
        if policy.is_lora:
            self.model = _plain_copy(policy)  # base weights; LoRA deltas are merged by sync()
        else:
            self.model = copy.deepcopy(base)
        self.model.to(dtype=policy.dtype).eval().requires_grad_(False)
        self._pairs = self._match_modules()
        self.sync()

    def _match_modules(self) -> list[tuple[nn.Module, nn.Module]]:
        """(trained module, copy module) pairs whose weights must be re-synced."""
        dst = dict(self.model.named_modules())
        pairs = []
        if self.policy.is_lora:
            from peft.tuners.lora import LoraLayer

            for name, mod in self.policy.causal_lm.named_modules():
                if isinstance(mod, LoraLayer):
                    pairs.append((mod, dst[name]))
        return pairs

    @torch.no_grad()
    def sync(self) -> None:
        if self.policy.is_lora:
            for lora_mod, plain in self._pairs:
                w = lora_mod.get_base_layer().weight.float()
                for adapter in lora_mod.active_adapters:
                    if adapter in lora_mod.lora_A:
                        w = w + lora_mod.get_delta_weight(adapter).float()
                plain.weight.copy_(w.to(plain.weight.dtype))
        else:
            src = dict(self.policy.causal_lm.named_parameters())
            for name, p in self.model.named_parameters():
                p.copy_(src[name].to(p.dtype))


def _plain_copy(policy: Policy) -> nn.Module:
    """A fresh *ForCausalLM with the base weights (no LoRA wrappers) on the policy's device."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(policy.base_path, dtype=torch.float32)
    return m.to(policy.device)


def rollout(policy: Policy, engine: RolloutModel | None, questions: Sequence[str], *,
            elicitation: str, group: int, max_new_tokens: int, temperature: float,
            top_p: float = 1.0, generator: torch.Generator | None = None,
            min_new_tokens: int = 0) -> Rollout:
    t0 = time.perf_counter()
    tok = policy.tokenizer
    texts = [render_prompt(tok, q, elicitation) for q in questions]
    ids, mask = encode_prompts(tok, texts, policy.device)
    model = engine.model if engine is not None else policy.model
    was_training = model.training
    model.eval()
    with autocast(policy.device, policy.dtype) if engine is None else contextlib.nullcontext():
        r_ids, r_mask = sample(model, ids, mask, group=group, max_new_tokens=max_new_tokens,
                               eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                               temperature=temperature, top_p=top_p, generator=generator,
                               min_new_tokens=min_new_tokens)
    model.train(was_training)
    completions = [tok.decode(row[m.bool()].tolist(), skip_special_tokens=True)
                   for row, m in zip(r_ids, r_mask, strict=True)]
    cut = (r_mask[:, -1] == 1) & (r_ids[:, -1] != tok.eos_token_id)
    if r_ids.shape[1] < max_new_tokens:  # stopped early: every response ended
        cut = torch.zeros_like(cut)
    return Rollout(ids, mask, r_ids, r_mask, group, completions, time.perf_counter() - t0,
                   float(cut.float().mean()))


# --------------------------------------------------------------------------------------------
# Response log-probs (and hidden states for a value head), prompt run once per group
# --------------------------------------------------------------------------------------------


def response_forward(policy: Policy, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                     response_ids: torch.Tensor, group: int, *, want_hidden: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(r_t | prompt, r_<t) for every response token, shape [B*G, T] (fp32), and optionally
    the final hidden state that predicted each token ([B*G, T, d]; a PPO value head reads it).

    The prompt runs once per group; its KV cache (with its autograd graph) is repeated G times
    and the responses run on top. Logits only at response positions."""
    lm = policy.causal_lm
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    kw = _cache_kwarg(decoder)
    cache = new_cache(lm.config)
    pos = positions(prompt_mask)
    with autocast(policy.device, policy.dtype):
        h_prompt = decoder(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos,
                           use_cache=True, **{kw: cache}).last_hidden_state[:, -1:]
        cache.batch_repeat_interleave(group)
        T = response_ids.shape[1]
        mask = torch.cat([prompt_mask.repeat_interleave(group, 0), torch.ones_like(response_ids)],
                         dim=1)
        r_pos = pos[:, -1:].repeat_interleave(group, 0) + 1 + torch.arange(T, device=pos.device)
        h_resp = decoder(input_ids=response_ids, attention_mask=mask, position_ids=r_pos,
                         use_cache=True, **{kw: cache}).last_hidden_state
        # The state before token t: the prompt's last position for t = 0, else response t-1.
        hidden = torch.cat([h_prompt.repeat_interleave(group, 0), h_resp[:, :-1]], dim=1)
        logits = head(hidden).float()
    logp = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return logp, (hidden if want_hidden else None)


# --------------------------------------------------------------------------------------------
# Reference policy (for the KL term): the starting weights
# --------------------------------------------------------------------------------------------


class Reference:
    """π_ref = the policy as it was when training started.

    With a fresh LoRA that is the base model, i.e. "the same model with the adapter disabled" —
    and that is how it is computed. When training continues an adapter (the format warm-up), the
    reference is the warm-up policy, not the base (which never writes the tags): its LoRA tensors
    are kept and swapped in for the reference pass. Full fine-tuning loads a frozen copy of the
    base weights (lazily: nothing is held when β = 0 and no KL is logged)."""

    def __init__(self, policy: Policy, lora_state: dict[str, torch.Tensor] | None = None):
        self.policy = policy
        self.frozen: nn.Module | None = None
        self.lora_state: dict[str, torch.Tensor] | None = None
        if not policy.is_lora:
            # Full fine-tuning always starts from the base weights on disk: load them when
            # first needed (also right after a resume, when the policy has already moved).
            return
        params = _lora_params(policy.model)
        if lora_state is not None:
            self.lora_state = {k: v.to(policy.device) for k, v in lora_state.items()}
        elif any(bool(p.detach().abs().sum()) for n, p in params.items() if "lora_B" in n):
            self.lora_state = {n: p.detach().clone() for n, p in params.items()}
        # else: a fresh adapter (B = 0) — disabling it gives the starting policy exactly.

    def state(self) -> dict[str, torch.Tensor] | None:
        return self.lora_state

    @torch.no_grad()
    def logprobs(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                 response_ids: torch.Tensor, group: int) -> torch.Tensor:
        p = self.policy
        if not p.is_lora:
            if self.frozen is None:
                self.frozen = _plain_copy(p).eval().requires_grad_(False)
            ref = Policy(self.frozen, p.tokenizer, p.base_spec, p.base_path, False, p.device,
                         p.dtype)
            return response_forward(ref, prompt_ids, prompt_mask, response_ids, group)[0]
        if self.lora_state is None:
            with p.model.disable_adapter():
                return response_forward(p, prompt_ids, prompt_mask, response_ids, group)[0]
        with swapped_lora(p.model, self.lora_state):
            return response_forward(p, prompt_ids, prompt_mask, response_ids, group)[0]


def _lora_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


@contextlib.contextmanager
def swapped_lora(model: nn.Module, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily point the LoRA parameters at ``state``'s tensors (no copies)."""
    params = _lora_params(model)
    saved = {n: p.data for n, p in params.items()}
    try:
        for n, p in params.items():
            p.data = state[n]
        yield
    finally:
        for n, p in params.items():
            p.data = saved[n]


# --------------------------------------------------------------------------------------------
# Which response tokens state the confidence (split credit)
# --------------------------------------------------------------------------------------------


def confidence_start(tokenizer: Any, ids: Sequence[int], completion: str) -> int | None:
    """Index of the first token of the last ``<confidence>`` tag in a response, or None.

    Tokens before it (reasoning and answer) are "answer tokens"; it and the rest are "confidence
    tokens". Found by binary search on the length of decoded prefixes."""
    at = completion.lower().rfind("<confidence>")
    if at < 0:
        return None
    lo, hi = 1, len(ids)  # smallest k with len(decode(ids[:k])) > at
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(list(ids[:mid]), skip_special_tokens=True)) > at:
            hi = mid
        else:
            lo = mid + 1
    return lo - 1


def confidence_masks(tokenizer: Any, ro: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence-token mask [B*G, T], has-confidence-span [B*G]) as floats."""
    n, T = ro.response_ids.shape
    conf = torch.zeros(n, T, device=ro.response_ids.device)
    has = torch.zeros(n, device=ro.response_ids.device)
    for i in range(n):
        length = int(ro.response_mask[i].sum())
        start = confidence_start(tokenizer, ro.response_ids[i, :length].tolist(),
                                 ro.completions[i])
        if start is not None:
            conf[i, start:length] = 1.0
            has[i] = 1.0
    return conf, has


def group_advantages(r: torch.Tensor, group: int, norm: str, std_floor: float = 0.0
                     ) -> torch.Tensor:
    """Group-relative advantages: subtract each group's mean; with ``norm="std"`` also divide
    by the group's std, floored at ``std_floor`` (a group whose rewards barely differ — all
    wrong under RLCR, rewards −q² — would otherwise have its tiny differences blown up to ±1)."""
    g = r.view(-1, group)
    a = g - g.mean(dim=1, keepdim=True)
    if norm == "std":
        std = g.std(dim=1, keepdim=True, unbiased=False) if group > 1 else torch.ones_like(a)
        a = a / std.clamp(min=max(std_floor, 1e-6))
    elif norm != "mean":
        raise UsageError(f"advantage normalisation must be 'std' or 'mean', not {norm!r}")
    return a.reshape(-1)


# --------------------------------------------------------------------------------------------
# Held-out evaluation (every metric from calbench.metrics)
# --------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    n: int
    accuracy: float
    format_rate: float
    conf_parse_rate: float
    conf_mean: float | None
    conf_std: float | None
    brier: float | None  # over parsed confidences
    smece: float | None
    by_bin: dict[str, float] = field(default_factory=dict)  # accuracy per difficulty bin
    # does the stated confidence rank right above wrong answers, and follow the bins' accuracy?
    # (a constant confidence has a low Brier and smooth ECE, and AUROC 0.5)
    auroc: float | None = None
    conf_by_bin: dict[str, float] = field(default_factory=dict)  # mean parsed confidence per bin

    def to_log(self, prefix: str = "eval_") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def evaluate(policy: Policy, engine: RolloutModel | None, items: Sequence[dict], *,
             elicitation: str, max_new_tokens: int, batch_size: int = 32) -> EvalResult:
    """Greedy answers to held-out items, graded and scored like `calbench eval` does."""
    from calbench.train.rewards import score_completions

    prefill = prefill_for(elicitation)
    scored = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        ro = rollout(policy, engine, [it["question"] for it in chunk], elicitation=elicitation,
                     group=1, max_new_tokens=max_new_tokens, temperature=0.0)
        scored += score_completions(ro.completions, [it["gold"] for it in chunk],
                                    prefill=prefill)
    return eval_result(items, scored)


def eval_result(items: Sequence[dict], scored: Sequence[Any]) -> EvalResult:
    """The held-out metrics of graded answers (``scored[i]`` answers ``items[i]``), each computed
    by :mod:`calbench.metrics` as `calbench score` computes it; confidence metrics over the
    answers whose confidence parsed (policy ``drop``), accuracy over all."""
    from calbench.core.chain_sum import difficulty_bin

    n = len(scored)
    correct = [float(s.correct) for s in scored]
    conf = [s.confidence for s in scored if s.confidence is not None]
    corr = [float(s.correct) for s in scored if s.confidence is not None]
    bins: dict[str, list[float]] = {}
    conf_bins: dict[str, tuple[list[float], list[float]]] = {}
    for it, s in zip(items, scored, strict=True):
        if "meta" in it and "num_terms" in it["meta"]:
            key = difficulty_bin(it["meta"])
            bins.setdefault(key, []).append(float(s.correct))
            if s.confidence is not None:
                ys, cs = conf_bins.setdefault(key, ([], []))
                ys.append(float(s.correct))
                cs.append(s.confidence)
    return EvalResult(
        n=n,
        accuracy=metrics.accuracy(correct) if n else 0.0,
        format_rate=sum(s.format_ok for s in scored) / max(n, 1),
        conf_parse_rate=len(conf) / max(n, 1),
        conf_mean=metrics.mean_confidence(corr, conf) if conf else None,
        conf_std=float(np.std(conf)) if conf else None,
        brier=metrics.brier(corr, conf) if conf else None,
        smece=metrics.smooth_ece(corr, conf) if conf else None,
        by_bin={k: metrics.accuracy(v) for k, v in sorted(bins.items())},
        # None rather than NaN (and no warning) when one class is missing: AUROC is undefined
        auroc=metrics.auroc(corr, conf) if 0 < sum(corr) < len(corr) else None,
        conf_by_bin={k: metrics.mean_confidence(*v) for k, v in sorted(conf_bins.items())},
    )


def rollout_stats(scored: Sequence[Any], parts: Sequence[Any], ro: Rollout) -> dict[str, Any]:
    """Per-step reward components, accuracy and the confidence spread (a collapse of every
    stated confidence to one value is the failure mode the RLCR authors warn about)."""
    n = len(scored)
    conf = [s.confidence for s in scored if s.confidence is not None]
    return {
        "reward": float(np.mean([p.total for p in parts])),
        "reward_correctness": float(np.mean([p.correctness for p in parts])),
        "reward_confidence": float(np.mean([p.confidence for p in parts])),
        "reward_format": float(np.mean([p.format for p in parts])),
        "accuracy": sum(s.correct for s in scored) / n,
        "format_rate": sum(s.format_ok for s in scored) / n,
        "conf_parse_rate": len(conf) / n,
        "conf_mean": float(np.mean(conf)) if conf else None,
        "conf_std": float(np.std(conf)) if conf else None,
        "conf_distinct": len({round(c, 4) for c in conf}),
        # Brier score of the stated confidences that parse (format failures excluded)
        "brier": metrics.brier([float(s.correct) for s in scored if s.confidence is not None],
                               conf) if conf else None,
        "response_tokens": ro.num_tokens / n,
        "rollout_s": ro.seconds,
        "rollout_tokens_per_s": ro.num_tokens / max(ro.seconds, 1e-9),
        "truncated_frac": ro.truncated,
        "sample": scored[0].text[:300],  # one response as the reward saw it (prefill restored)
    }


# --------------------------------------------------------------------------------------------
# Logging, checkpoints, resume
# --------------------------------------------------------------------------------------------


class JsonlLog:
    """Append-only JSONL, flushed after every line. ``truncate_after(step)`` drops lines logged
    after the checkpoint a resumed run restarts from, so each step appears once."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except ValueError:  # a line cut short by the kill
                continue
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(_plain(record), allow_nan=False) + "\n")
            f.flush()


def _plain(o: Any) -> Any:
    """JSON-safe copy: numpy scalars as Python numbers, NaN/inf as null (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return str(o)


def save_model(policy: Policy, folder: Path, info: dict[str, Any],
               also: Callable[[Path], None] | None = None) -> None:
    """Save the trained weights so ``calbench eval --model <folder>`` loads them: a PEFT adapter
    whose ``base_model_name_or_path`` is the user's ``--model`` spec (resolved offline by
    :func:`calbench.core.models.resolve_model`), or a full HF folder; plus ``calbench_train.json``.
    ``also(folder)`` writes further files (the trainer state) before the folder is swapped in."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if policy.is_lora:
        for cfg in policy.model.peft_config.values():
            cfg.base_model_name_or_path = policy.base_spec
        # save_embedding_layers=False: the base is an alias, not a path peft could inspect
        policy.model.save_pretrained(tmp, save_embedding_layers=False)
    else:
        policy.model.save_pretrained(tmp)
        policy.tokenizer.save_pretrained(tmp)
    if also is not None:
        also(tmp)
    atomic_write_json(tmp / "calbench_train.json", info)
    # Swap in the new folder only when complete, so a kill never leaves half a checkpoint.
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as ints, floats, lists and uint8 tensors: the types
    ``torch.load(weights_only=True)`` reads (numpy's raw state holds an ndarray, which only a
    full unpickle restores)."""
    version, mt, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "mt": [int(x) for x in mt],
                   "gauss_next": gauss_next},
        "numpy": {"kind": str(kind), "keys": [int(x) for x in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["mt"]), py["gauss_next"]))
    np.random.set_state((npy["kind"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


TRAINER_STATE = "trainer_state.pt"  # in checkpoint/: step, optimizer, RNGs, reference LoRA


def save_trainer_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` of tensors and plain values only, so :func:`load_trainer_state` can read
    it without unpickling objects."""
    torch.save(state, path)


def load_trainer_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's trainer state, read with ``weights_only=True``: a file that holds any
    other pickled object (which a full unpickle would run) is refused with a UsageError."""
    hint = "pass --overwrite (or a new --out) to start the run afresh"
    if not path.is_file():
        raise UsageError(f"{path}: missing, so the checkpoint in {path.parent} is incomplete; "
                         f"{hint}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        why = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\s+was not an allowed|\n\n|$)",
                        str(e), re.S)
        reason = why.group(1).strip() if why and why.group(1).strip() else type(e).__name__
        raise UsageError(f"{path}: refusing to load: not a tensors-only calbench trainer state "
                         f"({reason}); {hint}") from None
    missing = [k for k in ("step", "rng", "optimizer") if not isinstance(state, dict)
               or k not in state]
    if missing:
        raise UsageError(f"{path}: not a calbench trainer state (lacks {', '.join(missing)}); "
                         f"{hint}")
    return state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A sampling RNG that depends only on (seed, step), so a resumed run samples as the
    uninterrupted one would have."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + step)
    return g


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoint"


def read_checkpoint_info(out_dir: Path) -> dict[str, Any] | None:
    f = checkpoint_dir(out_dir) / "calbench_train.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UsageError(f"{f}: not valid JSON ({e}); pass --overwrite (or a new --out) to "
                         "start the run afresh") from None


def check_resumable(out_dir: Path, cfg: RunConfig, algo: str) -> dict[str, Any] | None:
    """The checkpoint info to resume from, None to start fresh; UsageError when the folder
    holds a different run."""
    info = read_checkpoint_info(out_dir)
    if info is None:
        return None
    old = info.get("config", {})
    for key in ("model", "method", "full_finetune", "elicitation"):
        if old.get(key) != getattr(cfg, key):
            raise UsageError(
                f"{out_dir} holds a checkpoint of another run ({key}={old.get(key)!r}, now "
                f"{getattr(cfg, key)!r}); pass a new --out or --overwrite")
    if info.get("algo") != algo:
        raise UsageError(f"{out_dir} holds a {info.get('algo')} run, not {algo}; pass a new --out "
                         "or --overwrite")
    return info


def run_info(cfg: RunConfig, algo: str, step: int, wall_s: float, **extra: Any) -> dict[str, Any]:
    from calbench import __version__

    return {"config": cfg.to_dict(), "method": cfg.method, "algo": algo, "steps": step,
            "seed": cfg.seed, "wall_time_s": round(wall_s, 2), "git_commit": git_commit(),
            "calbench_version": __version__, **extra}


def progress_bar(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    disable=not enabled)



# --------------------------------------------------------------------------------------------
# A training session: setup, resume, per-step bookkeeping. The algorithm files own the math.
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path  # the saved adapter (LoRA) or model (full fine-tuning)
    steps: int
    wall_s: float
    final_eval: dict[str, Any] | None


class Session:
    """Loads the policy, data and (when ``out_dir`` holds a checkpoint of the same run) the saved
    state; the algorithm calls :meth:`rollout`, :meth:`score`, then :meth:`end_step` each step.

    Folder layout: ``log.jsonl`` (one line per step, plus ``"event"`` lines for evaluations),
    ``checkpoint/`` (latest; an adapter folder plus ``trainer_state.pt``), and at the end
    ``adapter/`` (LoRA) or ``model/`` (full fine-tuning), each with ``calbench_train.json``."""

    def __init__(self, cfg: Any, algo: str, *, overwrite: bool = False,
                 extra_state: dict[str, nn.Module] | None = None):
        from calbench.core.chain_sum import chain_sum_items

        self.cfg, self.algo = cfg, algo
        self.out = Path(cfg.out_dir)
        if overwrite:
            for name in ("checkpoint", "log.jsonl", "adapter", "model"):
                path = self.out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        info = check_resumable(self.out, cfg, algo)
        seed_everything(cfg.seed)
        ckpt = checkpoint_dir(self.out)
        self.policy = load_policy(cfg, adapter_override=str(ckpt) if info else None)
        self.tok = self.policy.tokenizer
        self.prefill = prefill_for(cfg.elicitation)
        state = load_trainer_state(ckpt / TRAINER_STATE, self.policy.device) if info else None
        self.reference = Reference(self.policy, state.get("reference_lora") if state else None)
        self.engine = RolloutModel(self.policy)
        self.extra = extra_state or {}
        for m in self.extra.values():
            m.to(self.policy.device)
        self.start_step = int(state["step"]) if state else 0
        self.wall_before = float(state.get("wall_s", 0.0)) if state else 0.0
        self._state = state
        per_step = getattr(cfg, "prompts_per_step", 1)
        n_train = cfg.steps * per_step
        order = getattr(cfg, "train_order", "stream")
        if order == "stratified":
            from calbench.core.chain_sum import stratified_train_items

            self.train_items = stratified_train_items(n_train, cfg.seed)
        elif order == "stream":
            self.train_items = chain_sum_items("train", n_train, cfg.seed)
        else:
            raise UsageError(f"train_order must be 'stream' or 'stratified', not {order!r}")
        self.eval_items = chain_sum_items(cfg.eval_split, cfg.eval_size, cfg.seed) \
            if cfg.eval_size else []
        self.log = JsonlLog(self.out / "log.jsonl")
        if state is None:  # no checkpoint: whatever a killed earlier attempt logged is void
            self.log.path.unlink(missing_ok=True)
        self.log.truncate_after(self.start_step)
        self.optimizer: torch.optim.Optimizer | None = None
        self.t0 = time.perf_counter()
        self.last_eval: dict[str, Any] | None = None
        if state:
            set_rng_state(state["rng"])
        atomic_write_json(self.out / "config.json", {"algo": algo, **cfg.to_dict()})

    # -- setup ---------------------------------------------------------------------------------

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Register the optimizer; on resume, restore its state and the extra modules'."""
        self.optimizer = optimizer
        if self._state:
            optimizer.load_state_dict(self._state["optimizer"])
            for name, m in self.extra.items():
                m.load_state_dict(self._state["extra"][name])

    def batch(self, step: int) -> list[dict]:
        """The training questions of 1-based ``step`` (a fixed slice: resume-safe)."""
        b = self.cfg.prompts_per_step
        return self.train_items[(step - 1) * b: step * b]

    # -- per step ------------------------------------------------------------------------------

    def rollout(self, items: Sequence[dict], step: int) -> Rollout:
        cfg = self.cfg
        self.engine.sync()
        return rollout(self.policy, self.engine, [it["question"] for it in items],
                       elicitation=cfg.elicitation, group=cfg.group_size,
                       max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                       top_p=cfg.top_p, min_new_tokens=getattr(cfg, "min_new_tokens", 0),
                       generator=step_generator(cfg.seed, step, self.policy.device))

    def score(self, ro: Rollout, items: Sequence[dict]) -> tuple[list[Any], list[Any]]:
        from calbench.train.rewards import reward_parts, score_completions

        golds = [it["gold"] for it in items for _ in range(ro.group)]
        scored = score_completions(ro.completions, golds, prefill=self.prefill)
        return scored, reward_parts(self.cfg.method, scored, self.cfg.format_weight)

    def clip_and_step(self, params: Sequence[nn.Parameter]) -> float:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        assert self.optimizer is not None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def is_eval_step(self, step: int) -> bool:
        e = self.cfg.eval_every
        return bool(self.eval_items) and (step == self.cfg.steps or (e > 0 and step % e == 0))

    def run_eval(self, step: int) -> dict[str, Any]:
        t = time.perf_counter()
        self.engine.sync()
        res = evaluate(self.policy, self.engine, self.eval_items,
                       elicitation=self.cfg.elicitation, max_new_tokens=self.cfg.max_new_tokens)
        rec = {"step": step, "event": "eval", **res.to_log(), "eval_s": time.perf_counter() - t}
        self.log.write(rec)
        self.last_eval = rec
        return rec

    def end_step(self, step: int, stats: dict[str, Any]) -> dict[str, Any]:
        rec = {"step": step, "wall_s": round(self.wall_s(), 2), **stats}
        self.log.write(rec)
        if self.is_eval_step(step):
            self.run_eval(step)
        if step == self.cfg.steps or (self.cfg.save_every and step % self.cfg.save_every == 0):
            self.save_checkpoint(step)
        return rec

    def hardware(self) -> dict[str, str]:
        """What the run computed on: ``--dtype auto`` resolves per machine (bf16 autocast on a
        CPU with AVX512-BF16/AMX, fp32 on AVX2), and that changes the numbers a run produces."""
        cpu = f"{os.cpu_count()} CPU cores, " + ("AVX512-BF16/AMX" if cpu_has_fast_bf16()
                                                   else "no native bf16")
        return {"device": str(self.policy.device),
                "dtype": str(self.policy.dtype).removeprefix("torch."), "cpu": cpu}

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def save_checkpoint(self, step: int) -> None:
        ckpt = checkpoint_dir(self.out)
        info = run_info(self.cfg, self.algo, step, self.wall_s(), **self.hardware())
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "extra": {k: m.state_dict() for k, m in self.extra.items()},
            "reference_lora": self.reference.state(),
            "rng": rng_state(),
            "wall_s": self.wall_s(),
        }
        # inside the folder before it is swapped in: adapter and state always match
        save_model(self.policy, ckpt, info,
                   also=lambda d: save_trainer_state(d / TRAINER_STATE, state))

    def steps(self) -> Iterator[int]:
        """1-based steps still to run, with a rich progress bar (its info line shows the last
        step's reward, accuracy and confidence spread)."""
        cfg = self.cfg
        if self.start_step == 0 and self.eval_items:
            self.run_eval(0)
        with progress_bar(cfg.progress) as bar:
            task = bar.add_task(f"{self.algo} {cfg.method}", total=cfg.steps,
                                completed=self.start_step, info="")
            for step in range(self.start_step + 1, cfg.steps + 1):
                yield step
                last = self._last_line()
                bar.update(task, completed=step, info=last)

    def _last_line(self) -> str:
        try:
            lines = self.log.path.read_text().splitlines()
        except OSError:
            return ""
        rec = json.loads(lines[-1]) if lines else {}
        if rec.get("event") == "eval":
            return (f"eval acc {rec['eval_accuracy']:.2f} smECE "
                    f"{_fmt(rec.get('eval_smece'))} AUROC {_fmt(rec.get('eval_auroc'))} "
                    f"conf {_fmt(rec.get('eval_conf_mean'))}")
        return (f"R {_fmt(rec.get('reward'))} acc {_fmt(rec.get('accuracy'))} conf "
                f"{_fmt(rec.get('conf_mean'))}±{_fmt(rec.get('conf_std'))} "
                f"{_fmt(rec.get('step_s'), 1)}s/step")

    def finish(self) -> TrainResult:
        step = self.cfg.steps  # end_step already checkpointed it
        name = "adapter" if self.policy.is_lora else "model"
        info = run_info(self.cfg, self.algo, step, self.wall_s(), final_eval=self.last_eval,
                        **self.hardware())
        save_model(self.policy, self.out / name, info)
        return TrainResult(self.out, self.out / name, step, self.wall_s(), self.last_eval)


def _fmt(x: Any, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
