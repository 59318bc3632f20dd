"""Log-probabilities of sampled responses under the policy and under the reference policy.

The prompt of each group runs once and its KV cache — with its autograd graph, so LoRA gradients
flow through the prompt once — is repeated G times; only the response tokens run per sample.
Logits are computed only at response positions (the ``logits_to_keep`` idea), in fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from calbench.core.sampling import cache_kwarg, new_cache, positions
from calbench.train.policy import Policy, autocast, load_base_copy


def response_forward(
    policy: Policy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    group: int,
    *,
    want_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(r_t | prompt, r_<t) for every response token, shape [B*G, T] (fp32), and optionally
    the final hidden state that predicted each token ([B*G, T, d]; a PPO value head reads it).

    The prompt runs once per group; its KV cache (with its autograd graph) is repeated G times
    and the responses run on top. Logits only at response positions."""
    lm = policy.causal_lm
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    kw = cache_kwarg(decoder)
    cache = new_cache(lm.config)
    pos = positions(prompt_mask)
    with autocast(policy.device, policy.dtype):
        h_prompt = decoder(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=pos,
            use_cache=True,
            **{kw: cache},
        ).last_hidden_state[:, -1:]
        cache.batch_repeat_interleave(group)
        T = response_ids.shape[1]
        mask = torch.cat(
            [prompt_mask.repeat_interleave(group, 0), torch.ones_like(response_ids)], dim=1
        )
        r_pos = pos[:, -1:].repeat_interleave(group, 0) + 1 + torch.arange(T, device=pos.device)
        h_resp = decoder(
            input_ids=response_ids,
            attention_mask=mask,
            position_ids=r_pos,
            use_cache=True,
            **{kw: cache},
        ).last_hidden_state
        # The state before token t: the prompt's last position for t = 0, else response t-1.
        hidden = torch.cat([h_prompt.repeat_interleave(group, 0), h_resp[:, :-1]], dim=1)
        logits = head(hidden).float()
    logp = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return logp, (hidden if want_hidden else None)


class Reference:
    """π_ref = the policy as it was when training started (for the KL term).

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
        """The reference LoRA tensors a checkpoint must keep (None: the adapter disabled)."""
        return self.lora_state

    @torch.no_grad()
    def logprobs(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        response_ids: torch.Tensor,
        group: int,
    ) -> torch.Tensor:
        """log π_ref of every response token, as :func:`response_forward` computes it."""
        p = self.policy
        if not p.is_lora:
            if self.frozen is None:
                self.frozen = load_base_copy(p).eval().requires_grad_(False)
            ref = Policy(
                self.frozen, p.tokenizer, p.base_spec, p.base_path, False, p.device, p.dtype
            )
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
