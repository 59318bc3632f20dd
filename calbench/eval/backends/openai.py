"""The OpenAI-compatible backends: lm-eval's ``local-chat-completions`` and ``local-completions``
with calbench's request policy (registered as ``calbench-chat-completions`` and
``calbench-completions``).

What lm-eval's classes leave to chance and this module fixes:

* **only well-formed completions are cached or used.** A response is accepted when it is HTTP
  2xx, valid JSON, and holds exactly one choice per prompt sent, each with its text (chat:
  ``message.content``; a ``null`` content only with ``finish_reason: "length"``, read as
  empty), or for log-likelihood requests the token log-probabilities. Anything else is retried,
  then fails the run with a :class:`ServerError` that quotes (an excerpt of) what the server
  sent. lm-eval would store a response without ``choices`` as an empty answer.
* **retries**: ``max_retries`` retries after the first attempt, on connection errors,
  timeouts, malformed 2xx responses, HTTP 408/409/425/429 and 5xx; other 4xx fail at once
  (the same request would be refused again). The wait is ``Retry-After`` when a 429/503 sends
  one (at most 60 s), else exponential backoff (0.5, 1, 2, ... s, at most 8 s): the rules of
  :mod:`calbench.core.retry`, which the LLM judge follows too. The request slot is freed while
  waiting.
* **timeout**: ``timeout`` seconds per attempt (connect to last byte); a timeout is reported
  with the URL, the timeout and the attempt number.
* **secrets**: the API key (read from ``api_key_env``) and URL credentials (``basic_auth``,
  sent as HTTP Basic auth) are registered with :mod:`calbench.eval.backends.secrets`; no header,
  key or credential appears in a log line or an error message.

Requests always go through lm-eval's concurrent (asyncio) path, which this module replaces;
``num_concurrent`` must be at least 2.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import os
from functools import cached_property
from typing import Any

import aiohttp
from lm_eval.api.registry import register_model
from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI
from lm_eval.models.utils import chunks, postprocess_generated_text
from tqdm import tqdm

from calbench.core.errors import RuntimeFailure
from calbench.core.retry import backoff_seconds, retry_after_seconds, retryable_status
from calbench.eval.backends.secrets import add_secret, redact

EXCERPT = 300  # characters of a bad response quoted in messages

logger = logging.getLogger("calbench.eval.backends")


class ServerError(RuntimeFailure):
    """The server never gave a usable answer to a request (exit 1)."""


class BadResponse(ValueError):
    """One attempt's response cannot be used; ``retryable`` says whether to try again."""

    def __init__(self, message: str, retryable: bool = True, wait: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.wait = wait


def excerpt(raw: bytes | str) -> str:
    """The start of a response body on one line, secrets masked (for error messages)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    if not text:
        return "(empty body)"
    return redact(text[:EXCERPT] + ("..." if len(text) > EXCERPT else ""))


def choices_of(outputs: Any, n: int) -> list[dict]:
    """The choices of a parsed response, ordered by ``index``; BadResponse unless there is
    exactly one per prompt sent (``n``)."""
    if not isinstance(outputs, dict):
        raise BadResponse(f"a JSON {type(outputs).__name__}, not an object")
    if "choices" not in outputs:
        keys = ", ".join(map(str, list(outputs)[:10])) or "none"
        raise BadResponse(f'no "choices" (keys: {keys})')
    choices = outputs["choices"]
    if not isinstance(choices, list) or len(choices) != n:
        got = f"{len(choices)}" if isinstance(choices, list) else type(choices).__name__
        raise BadResponse(f'"choices" holds {got} completions for {n} prompt(s)')
    by_index: dict[int, dict] = {}
    for pos, c in enumerate(choices):
        if not isinstance(c, dict):
            raise BadResponse(f"choice {pos} is a {type(c).__name__}, not an object")
        i = c.get("index", pos)
        if not isinstance(i, int) or not 0 <= i < n or i in by_index:
            raise BadResponse(f"choice {pos} has a bad or repeated index {i!r}")
        by_index[i] = c
    return [by_index[i] for i in range(n)]


def chat_texts(outputs: Any, n: int, think_end_token: str | None = None) -> list[str]:
    texts = []
    for i, c in enumerate(choices_of(outputs, n)):
        msg = c.get("message")
        content = msg.get("content") if isinstance(msg, dict) else None
        if content is None and isinstance(msg, dict) and c.get("finish_reason") == "length":
            content = ""  # the whole token budget went to hidden reasoning: a real, empty answer
        if not isinstance(content, str):
            raise BadResponse(f"choice {i} has no message.content string")
        texts.append(
            postprocess_generated_text(content, stop=None, think_end_token=think_end_token)
        )
    return texts


def completion_texts(outputs: Any, n: int) -> list[str]:
    texts = []
    for i, c in enumerate(choices_of(outputs, n)):
        if not isinstance(c.get("text"), str):
            raise BadResponse(f'choice {i} has no "text" string')
        texts.append(c["text"])
    return texts


def completion_logprobs(outputs: Any, ctxlens: list[int]) -> list[tuple[float, bool]]:
    """(log-likelihood, is_greedy) per prompt, as lm-eval computes them, after checking that
    every choice has a number for each continuation token."""
    choices = choices_of(outputs, len(ctxlens))
    for i, (c, ctxlen) in enumerate(zip(choices, ctxlens, strict=True)):
        lp = c.get("logprobs")
        toks = lp.get("token_logprobs") if isinstance(lp, dict) else None
        tops = lp.get("top_logprobs") if isinstance(lp, dict) else None
        if not (
            isinstance(toks, list)
            and isinstance(tops, list)
            and len(toks) == len(tops)
            and len(toks) > ctxlen
            and all(isinstance(t, (int, float)) for t in toks[ctxlen:-1])
            and all(isinstance(t, dict) and t for t in tops[ctxlen:-1])
        ):
            raise BadResponse(f"choice {i} lacks the prompt's token log-probabilities")
    return LocalCompletionsAPI.parse_logprobs(outputs={"choices": choices}, ctxlens=ctxlens)


class _RequestPolicy:
    """Mixin over lm-eval's ``TemplateAPI`` subclasses: see the module docstring."""

    def __init__(
        self,
        *args: Any,
        api_key_env: str = "OPENAI_API_KEY",
        basic_auth: tuple[str, str] | None = None,
        timeout: float = 300,
        max_retries: int = 5,
        num_concurrent: int = 4,
        **kwargs: Any,
    ) -> None:
        if int(num_concurrent) < 2:
            raise ValueError("calbench's API backends need num_concurrent >= 2")
        if float(timeout) <= 0 or int(max_retries) < 0:
            raise ValueError("timeout must be > 0 and max_retries >= 0")
        self._api_key_value = os.environ.get(api_key_env, "")
        self._basic_auth = basic_auth
        add_secret(self._api_key_value)
        super().__init__(*args, num_concurrent=num_concurrent, max_retries=max_retries, **kwargs)
        self.timeout = float(timeout)  # lm-eval stores int(timeout): 0.5 would become 0
        self.max_retries = int(max_retries)

    @cached_property
    def api_key(self) -> str:
        return self._api_key_value

    @cached_property
    def header(self) -> dict:
        if self._basic_auth:
            token = base64.b64encode(":".join(self._basic_auth).encode()).decode()
            add_secret(token)
            return {"Authorization": f"Basic {token}"}
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def model_call(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "calbench's API backends send requests through "
            "get_batched_requests only (num_concurrent >= 2)"
        )

    def _parse(self, outputs: Any, n: int, generate: bool, ctxlens: list) -> list:
        raise NotImplementedError

    async def get_batched_requests(
        self,
        requests: list,
        cache_keys: list,
        *,
        generate: bool = True,
        ctxlens: list[int] | None = None,
        **kwargs: Any,
    ) -> list[list]:
        ctxlens = ctxlens or [None] * len(requests)
        conn = aiohttp.TCPConnector(limit=self._concurrent, ssl=self.verify_certificate)
        sem = asyncio.Semaphore(self._concurrent)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            tasks = [
                asyncio.create_task(self._request(session, sem, msgs, keys, lens, generate, kwargs))
                for msgs, keys, lens in zip(
                    chunks(requests, n=self._batch_size),
                    chunks(cache_keys, n=self._batch_size),
                    chunks(ctxlens, n=self._batch_size),
                    strict=True,
                )
            ]
            # a bar closed on failure too, so the error message starts on its own line
            with tqdm(total=len(tasks), desc="Requesting API") as bar:

                def count(task: asyncio.Task) -> None:  # answered requests only
                    if not task.cancelled() and task.exception() is None:
                        bar.update(1)

                for t in tasks:
                    t.add_done_callback(count)
                try:
                    return await asyncio.gather(*tasks)
                except BaseException:
                    # stop the other requests before the session closes under them
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise

    async def _request(
        self,
        session: aiohttp.ClientSession,
        sem: asyncio.Semaphore,
        messages: list,
        cache_keys: list,
        ctxlens: list,
        generate: bool,
        kwargs: dict,
    ) -> list:
        """One batch of prompts: send, check, cache; retry per the policy."""
        kwargs = dict(kwargs)
        gen_kwargs = copy.deepcopy(kwargs.pop("gen_kwargs", None))
        payload = self._create_payload(
            self.create_message(messages),
            generate=generate,
            gen_kwargs=gen_kwargs,
            seed=self._seed,
            **kwargs,
        )
        attempts = self.max_retries + 1
        where = f"the server at {self.base_url}"
        for attempt in range(1, attempts + 1):
            try:
                async with sem:
                    answers = await self._attempt(
                        session, payload, len(messages), generate, ctxlens
                    )
            except BadResponse as e:
                problem, retryable, wait = str(e), e.retryable, e.wait
            except asyncio.TimeoutError:
                problem, retryable, wait = (
                    f"no response within --timeout {self.timeout:g} s",
                    True,
                    None,
                )
            except aiohttp.ClientError as e:
                problem, retryable, wait = (
                    f"could not connect or read the answer ({type(e).__name__}: {redact(str(e))})",
                    True,
                    None,
                )
            else:
                if cache_keys:
                    method = "generate_until" if generate else "loglikelihood"
                    for res, key in zip(answers, cache_keys, strict=True):
                        if key is not None:
                            self.cache_hook.add_partial(method, key, res)
                return answers
            at = f"attempt {attempt} of {attempts}"
            if not retryable:
                raise ServerError(
                    f"{where} refused the request: {problem} ({at}; not retried: "
                    "the same request would be refused again)"
                )
            if attempt == attempts:
                raise ServerError(
                    f"{where} failed: {problem} ({at}; --max-retries "
                    f"{self.max_retries}, --timeout {self.timeout:g} s)"
                )
            wait = backoff_seconds(attempt) if wait is None else wait
            logger.warning(
                "calbench: POST %s: %s (%s); retrying in %.3g s", self.base_url, problem, at, wait
            )
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, session: aiohttp.ClientSession, payload: dict, n: int, generate: bool, ctxlens: list
    ) -> list:
        async with session.post(self.base_url, json=payload, headers=self.header) as resp:
            status = resp.status
            raw = await resp.read()
            retry_after = resp.headers.get("Retry-After")
        if not 200 <= status < 300:
            wait = retry_after_seconds(retry_after) if status in (429, 503) else None
            raise BadResponse(
                f"HTTP {status}: {excerpt(raw)}",
                retryable=retryable_status(status),
                wait=wait,
            )
        try:
            outputs = json.loads(raw)
        except ValueError:
            raise BadResponse(
                f"HTTP {status} with a body that is not JSON: {excerpt(raw)}"
            ) from None
        try:
            return self._parse(outputs, n, generate, ctxlens)
        except BadResponse as e:
            raise BadResponse(f"HTTP {status} response unusable: {e}: {excerpt(raw)}") from None


@register_model("calbench-chat-completions")
class ChatCompletions(_RequestPolicy, LocalChatCompletion):
    """``/chat/completions``: the server applies the chat template."""

    def _parse(self, outputs: Any, n: int, generate: bool, ctxlens: list) -> list:
        return chat_texts(outputs, n, self.think_end_token)


@register_model("calbench-completions")
class Completions(_RequestPolicy, LocalCompletionsAPI):
    """``/completions`` with token ids rendered by the local chat template."""

    def _parse(self, outputs: Any, n: int, generate: bool, ctxlens: list) -> list:
        return completion_texts(outputs, n) if generate else completion_logprobs(outputs, ctxlens)
