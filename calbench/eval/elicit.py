"""The second pass of multi-request elicitations (``two-stage``, ``logprob``,
``consistency``).

The first request of these elicitations (answer only, prefilled ``<answer>``) runs through lm-eval
like any task; this module then sends the extra requests through the *same* lm-eval model object
(so every backend that lm-eval supports works, and greedy requests go through lm-eval's request
cache, which makes them resumable) and rewrites each record's confidence:

* ``two-stage``: a second chat turn, "how likely is your answer correct?", prefilled
  ``<confidence>``; the confidence is parsed from that reply.
* ``logprob``: confidence = exp(log P(answer tokens | prompt, ``<answer>``)) — the probability the
  model puts on the answer it gave, by lm-eval's ``loglikelihood``; needs a backend with
  logprobs of the prompt (hf, vllm, openai-completions; not chat APIs).
* ``consistency``: k samples at temperature T (cached in the run folder by (prompt, settings,
  round); on hf the k samples share one run of the prompt, elsewhere one request per round,
  seeded per round); answer = the most common answer (equivalent answers grouped: by
  stated value for math, by letter for multiple choice, by normalised text otherwise; ties go to
  the answer seen first), confidence = its share of the k samples.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict
from tqdm import tqdm

from calbench.core.errors import UsageError
from calbench.core.grade import _normalise_text, letter_of, plain_number
from calbench.core.parse import parse_confidence_details
from calbench.core.prompts import CONFIDENCE_PREFILL, Prompt, stage_two
from calbench.core.responses import read_response
from calbench.eval.harness import grade_doc

# What each backend can do; checked before anything runs.
LOGPROB_BACKENDS = ("hf", "vllm", "openai-completions")


def check_supported(elicitation: str, backend: str) -> None:
    if elicitation == "logprob" and backend not in LOGPROB_BACKENDS:
        raise UsageError(
            f"--elicitation logprob needs the log-probabilities of prompt tokens, which the "
            f"{backend} backend cannot return; use one of {', '.join(LOGPROB_BACKENDS)}"
        )


def _instance(kind: str, doc: dict, args: tuple, i: int):
    # lazy: lm_eval +0.1 s at import (python -X importtime); `calbench regrade` imports this
    # module and sends no requests
    from lm_eval.api.instance import Instance

    return Instance(
        request_type=kind, doc=doc, arguments=args, idx=0, metadata=("calbench_second_pass", i, 1)
    )


def _first_prompt(doc: dict) -> Prompt:
    return Prompt(
        [{"role": "system", "content": doc["system"]}, {"role": "user", "content": doc["user"]}],
        doc.get("prefill") or "",
    )


def _answer_span(response: str, prefill: str) -> str | None:
    """The generated answer text exactly as produced (between ``<answer>`` and ``</answer>``),
    for scoring its log-probability."""
    body = response[len(prefill) :] if response.startswith(prefill) else response
    end = body.lower().find("</answer>")
    span = body if end < 0 else body[:end]
    return span if span.strip() else None


def answer_key(answer: str | None, grader: str) -> Any:
    """Group equivalent answers for majority voting, with the graders' own readings: by stated
    value for math (:func:`calbench.core.grade.plain_number`), by letter for multiple choice
    (:func:`calbench.core.grade.letter_of`), by normalised text otherwise."""
    if answer is None:
        return None
    if grader == "math":
        n = plain_number(answer)
        return ("num", round(n, 9)) if n is not None else ("text", _normalise_text(answer))
    if grader == "letter":
        letter = letter_of(answer)
        return ("letter", letter) if letter else ("text", _normalise_text(answer))
    return ("text", _normalise_text(answer))


def majority(answers: list[str | None], grader: str) -> tuple[str | None, float | None, int]:
    """(answer, share of all samples, count) of the most common parsed answer; ties go to the
    answer seen first. No parsed answer at all -> (None, None, 0)."""
    keys = [answer_key(a, grader) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, None, 0
    best = max(counts.values())
    first = next(i for i, k in enumerate(keys) if k is not None and counts[k] == best)
    return answers[first], best / len(answers), best


def _two_stage(
    lm, records: list[dict], docs: dict[str, dict], gen_kwargs: dict, chat_api: bool
) -> None:
    reqs = []
    for i, rec in enumerate(records):
        doc = docs[rec["id"]]
        p2 = stage_two(_first_prompt(doc), rec["response"])
        history = [*p2.messages, {"role": "assistant", "content": p2.prefill}]
        ctx = lm.apply_chat_template(history, add_generation_prompt=False)
        kw = dict(gen_kwargs)
        if chat_api:
            kw.update(continue_final_message=True, add_generation_prompt=False)
        reqs.append(_instance("generate_until", doc, (ctx, kw), i))
        rec["stage2_prompt"] = getattr(ctx, "prompt", ctx)
    outs = lm.generate_until(reqs)
    for rec, out in zip(records, outs, strict=True):
        apply_stage_two(rec, CONFIDENCE_PREFILL + (out or ""))


def apply_stage_two(rec: dict, reply: str) -> None:
    """Store the two-stage ``reply`` (prefill included) in ``rec`` and set the record's
    confidence from it (also what ``calbench regrade`` re-reads)."""
    conf = parse_confidence_details(reply)
    rec["stage2_response"] = reply
    _set_confidence(
        rec,
        conf.value,
        "two-stage",
        raw=conf.raw,
        source=conf.source,
        rescaled=conf.rescaled,
        error=conf.error,
    )


def _logprob(lm, records: list[dict], docs: dict[str, dict], prompts: dict[str, str]) -> None:
    reqs, idx = [], []
    for i, rec in enumerate(records):
        doc = docs[rec["id"]]
        span = _answer_span(rec["response"], doc.get("prefill") or "")
        rec["logprob"] = None
        if span is None:
            continue
        reqs.append(_instance("loglikelihood", doc, (prompts[rec["id"]], span), i))
        idx.append(i)
    outs = lm.loglikelihood(reqs) if reqs else []
    for i, (ll, is_greedy) in zip(idx, outs, strict=True):
        rec = records[i]
        rec["logprob"] = {"sum": ll, "greedy": bool(is_greedy)}
        p = math.exp(ll) if math.isfinite(ll) else 0.0
        _set_confidence(rec, min(max(p, 0.0), 1.0), "logprob", raw=repr(ll))
    for rec in records:
        if rec["logprob"] is None:
            _set_confidence(rec, None, "logprob", error="no answer to score")


def _request_context(ctx: Any) -> Any:
    """A first-pass context as a request needs it. lm-eval's logged samples turn a chat API
    prompt (``JsonChatStr``, a one-string NamedTuple) into a plain 1-tuple, which the chat
    backend cannot send; rebuild it. Other contexts (strings) pass through."""
    from lm_eval.models.api_models import JsonChatStr  # lazy: +0.5-1.4 s (numpy, aiohttp)

    if (
        isinstance(ctx, tuple)
        and not isinstance(ctx, JsonChatStr)
        and len(ctx) == 1
        and isinstance(ctx[0], str)
    ):
        return JsonChatStr(ctx[0])
    return ctx


def _consistency(
    lm,
    records: list[dict],
    docs: dict[str, dict],
    prompts: dict[str, str],
    gen_kwargs: dict,
    *,
    k: int,
    temperature: float,
    seed: int,
    cache: Path,
    api: bool,
) -> None:
    import torch  # lazy: +0.9-3 s at import (python -X importtime); regrade imports this module

    db = SqliteDict(str(cache), autocommit=True)
    samples: dict[str, list[str]] = {r["id"]: [] for r in records}

    def round_kw(round_: int) -> dict:
        kw = dict(gen_kwargs, do_sample=True, temperature=temperature)
        if api:  # lm-eval sends a fixed seed; vary it per round or every sample is equal
            kw["seed"] = seed * 1000 + round_
        return kw

    def key(rid: str, round_: int) -> str:
        kw = {k_: v for k_, v in round_kw(round_).items() if k_ != "seed"}
        return hashlib.sha256(
            json.dumps([prompts[rid], kw, seed, round_], sort_keys=True, default=str).encode()
        ).hexdigest()

    try:
        if _is_hf(lm):
            # hf: all k samples of a question from one run of its prompt; each batch is
            # committed to the cache as it finishes, so a killed run resumes
            missing = [r["id"] for r in records if any(key(r["id"], j) not in db for j in range(k))]
            gen = _sample_shared_prefix(
                lm, [prompts[rid] for rid in missing], round_kw(0), k=k, seed=seed
            )
            for i, outs in gen:
                for j, text in enumerate(outs):
                    db.setdefault(key(missing[i], j), text)
        for round_ in range(k):
            kw = round_kw(round_)
            todo, keys = [], []
            for i, rec in enumerate(records):
                h = key(rec["id"], round_)
                if h in db:
                    samples[rec["id"]].append(db[h])
                else:
                    todo.append(
                        _instance(
                            "generate_until",
                            docs[rec["id"]],
                            (_request_context(prompts[rec["id"]]), kw),
                            i,
                        )
                    )
                    keys.append((rec["id"], h))
            if todo:
                torch.manual_seed(seed * 1000 + round_)
                outs = lm.generate_until(todo)
                for (rid, h), out in zip(keys, outs, strict=True):
                    db[h] = out or ""
                    samples[rid].append(out or "")
    finally:
        db.close()
    for rec in records:
        doc = docs[rec["id"]]
        prefill = doc.get("prefill") or ""
        apply_consistency(
            rec, doc, [prefill + s for s in samples[rec["id"]]], k=k, temperature=temperature
        )


def apply_consistency(
    rec: dict, doc: dict, texts: list[str], *, k: int, temperature: float
) -> None:
    """Vote over the sampled responses ``texts`` (prefill included) of the record ``rec``,
    whose ``response`` is its greedy first pass and whose other fields are that response's
    graded fields: answer = the majority answer (graded as ``grade_doc`` grades ``doc``),
    confidence = its share (also what ``calbench regrade`` recomputes)."""
    prefill = doc.get("prefill") or ""
    # read each sample as grade_doc reads a response
    answers = [read_response(t, prefill)[0].answer for t in texts]
    ans, share, count = majority(answers, doc.get("grader", "math"))
    rec["consistency"] = {
        "k": k,
        "temperature": temperature,
        "samples": texts,
        "answers": answers,
        "majority_count": count,
        "greedy_response": rec["response"],
    }
    if ans is not None:
        chosen = texts[answers.index(ans)]
        g = grade_doc(doc, chosen)
        rec.update(response=chosen, answer=g["answer"], correct=g["correct"])
        if "grading" in g:
            rec["grading"] = g["grading"]
    else:
        rec.update(answer=None, correct=False)
    _set_confidence(rec, share, "consistency", raw=f"{count}/{k}", error="no sample gave an answer")


def _is_hf(lm) -> bool:
    try:
        from lm_eval.models.huggingface import HFLM  # lazy: torch + transformers, +5 s
    except ImportError:  # pragma: no cover - lm-eval always ships it
        return False
    return isinstance(lm, HFLM) and getattr(lm, "backend", "causal") == "causal"


def _sample_shared_prefix(
    lm, contexts: list[str], gen_kwargs: dict, *, k: int, seed: int
) -> Iterator[tuple[int, list[str]]]:
    """k sampled continuations of each context on an lm-eval ``HFLM``, the prompt run once;
    yields ``(index into contexts, k texts)`` batch by batch.

    Why: lm-eval's ``generate_until`` re-runs the whole prompt for every sample, and with short
    answers the prompt is nearly all the compute (truthfulqa_mc: ~180 prompt tokens, 8 answer
    tokens), so k rounds cost k full passes. Here each prompt's KV cache is computed once and
    repeated k times (:func:`calbench.core.sampling.sample`, the trainer's sampler too). Prompts are
    encoded, stop strings applied and text decoded exactly as ``HFLM.generate_until`` does; the
    RNG is seeded per batch of prompts (a resumed run draws fresh samples only for prompts that
    have none cached)."""
    # lazy: torch +0.9-3 s, lm_eval.models +0.4-1.1 s at import (python -X importtime); only
    # hf consistency runs sample here
    import torch
    from lm_eval.models.utils import handle_stop_sequences, postprocess_generated_text

    from calbench.core.sampling import sample

    kwargs = dict(gen_kwargs)
    eos = lm.tok_decode(lm.eot_token_id, skip_special_tokens=False)
    until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
    max_new = int(kwargs.get("max_gen_toks", lm.max_gen_toks))
    temperature = float(kwargs.get("temperature", 1.0))
    top_p = float(kwargs.get("top_p", 1.0))
    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else lm.eot_token_id
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))  # less padding
    bs = max(1, int(lm.batch_size) if str(lm.batch_size).isdigit() else 16)
    batches = [order[a : a + bs] for a in range(0, len(order), bs)]
    for b, idx in enumerate(tqdm(batches, desc=f"consistency: {k} samples per prompt")):
        ids, mask = lm.tok_batch_encode(
            [contexts[i] for i in idx], left_truncate_len=lm.max_length - max_new
        )
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        gen = torch.Generator(device=lm.device).manual_seed(seed * 1_000_003 + b)
        toks, alive = sample(
            lm.model,
            ids,
            mask,
            group=k,
            max_new_tokens=max_new,
            eos_id=lm.eot_token_id,
            pad_id=pad_id,
            temperature=temperature,
            top_p=top_p,
            generator=gen,
        )
        texts = [
            postprocess_generated_text(
                generation=lm.tok_decode(toks[r][alive[r].bool()].tolist()),
                stop=until,
                think_end_token=None,
            )
            for r in range(toks.shape[0])
        ]
        for n, i in enumerate(idx):
            yield i, texts[n * k : (n + 1) * k]


def _set_confidence(
    rec: dict,
    value: float | None,
    method: str,
    *,
    raw: str | None = None,
    source: str | None = None,
    rescaled: bool = False,
    error: str | None = None,
) -> None:
    """Replace a record's confidence with the second pass's, keeping the parse details honest."""
    rec["confidence"] = value
    rec["parse"] = {
        **rec.get("parse", {}),
        "confidence_method": method,
        "confidence_source": source or method,
        "confidence_raw": raw,
        "confidence_rescaled": rescaled,
        "confidence_error": None if value is not None else (error or "missing"),
    }


def second_pass(
    elicitation: str,
    lm,
    records: list[dict],
    samples: list[dict],
    *,
    gen_kwargs: dict,
    backend: str,
    cache_dir: Path,
    seed: int,
    k: int = 5,
    temperature: float = 0.7,
) -> dict[str, Any]:
    """Run the extra requests of ``elicitation`` and rewrite the records' confidences in place.
    Returns the settings to record in the manifest."""
    docs = {s["doc"]["id"]: s["doc"] for s in samples}
    prompts = {}
    for s in samples:
        ctx = s["arguments"][0][0]
        prompts[s["doc"]["id"]] = ctx
    chat_api = backend == "openai-chat"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if elicitation in ("two-stage", "logprob"):
        from lm_eval.api.model import CachingLM  # lazy: +0.6-0.8 s (numpy), as _instance

        # greedy follow-up requests are cached like the first pass, so a killed run resumes
        lm = CachingLM(lm, str(cache_dir / "second_pass.db"))
    if elicitation == "two-stage":
        _two_stage(lm, records, docs, gen_kwargs, chat_api)
        return {"stage2_prefill": CONFIDENCE_PREFILL}
    if elicitation == "logprob":
        _logprob(lm, records, docs, prompts)
        return {"confidence": "exp(sum of answer-token log-probs)"}
    if elicitation == "consistency":
        # the first pass's own request settings (its stop sequences included), then sampling
        first_kwargs = samples[0]["arguments"][0][1] if samples else gen_kwargs
        _consistency(
            lm,
            records,
            docs,
            prompts,
            dict(first_kwargs),
            k=k,
            temperature=temperature,
            seed=seed,
            cache=cache_dir / "consistency.sqlite",
            api=backend in ("openai-chat", "openai-completions"),
        )
        return {"k": k, "temperature": temperature}
    raise ValueError(f"{elicitation} has no second pass")
