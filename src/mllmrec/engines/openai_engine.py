"""Any OpenAI-compatible chat endpoint (vLLM server, `transformers serve`, hosted APIs), async with bounded concurrency.

    export DEEPSEEK_API_KEY=...        # the key lives only in the environment
    spec = EngineSpec(engine="openai", model="deepseek-reasoner", base_url="https://api.deepseek.com/v1",
                      api_key_env="DEEPSEEK_API_KEY", concurrency=8, max_retries=3)
    OpenAIEngine(spec).generate(requests)

Transport is the `openai` SDK (AsyncOpenAI: HTTP, auth header, timeouts, typed errors); `timeout_s` bounds each
attempt's connect and each wait for response bytes (not the whole answer: a server that sends keep-alive bytes while it
thinks is not cut off). The retry policy is ours, with the SDK's retries off: it retries 429 / 5xx / 408 / timeouts /
connection errors / malformed JSON with exponential backoff + jitter (Retry-After honoured, capped at backoff_max_s).
Other 4xx fail at once. A request that still fails becomes a result with `error` set: the batch is never lost. Why not
the SDK's retries: it does not retry a malformed 200, its errors do not say how many attempts a failed request took (the
result's `retries`), its backoff is fixed (0.5-8 s, ignoring backoff_s / backoff_max_s), it gives up at once on a
Retry-After over 2 minutes, and it logs retries below WARNING, which a stage does not show. The API key is read from the
env var named in params and is redacted from every error and log line. `<think>` blocks and `reasoning_content` fields
go to `reasoning`, not to `text`.
"""

import asyncio
import base64
import io
import json
import logging
import os
import random
import threading

import openai

from mllmrec.config import EngineSpec
from mllmrec.engines.base import GenerationRequest, GenerationResult, load_image, split_think, with_image_parts
from mllmrec.errors import UserError

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


class OpenAIEngine:
    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.model_id, self.revision = spec.model, spec.revision
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self._key = ""
        if spec.api_key_env:
            self._key = os.environ.get(spec.api_key_env, "")
            if not self._key:
                raise UserError(f"models: environment variable {spec.api_key_env} (api_key_env) is not set or empty")
        self.stats = {"requests": 0, "retries": 0, "errors": 0}  # for stage reports and tests
        # sent with every request: the SDK would add OpenAI-Organization / OpenAI-Project from OPENAI_* env vars, which
        # are no business of another host; with no key, no Authorization header at all (as before the SDK)
        self._headers = {"OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()}
        if not self._key:
            self._headers["Authorization"] = openai.Omit()

    def _redact(self, s: str) -> str:
        return s.replace(self._key, "***") if self._key else s

    # ---- request body ----
    def _image_url(self, path: str) -> dict:
        im = load_image(path, self.spec.max_pixels)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        return {"type": "image_url", "image_url": {"url": url}}

    def _body(self, req: GenerationRequest) -> dict:
        if req.images:
            if len(req.images) > self.spec.limit_mm_per_prompt:
                raise ValueError(f"{len(req.images)} images > limit_mm_per_prompt={self.spec.limit_mm_per_prompt}")
            images = iter(req.images)
            messages = [
                {**m, "content": [self._image_url(next(images)) if p["type"] == "image" else p for p in m["content"]]}
                for m in with_image_parts(req.messages, len(req.images))
            ]
        else:
            messages = list(req.messages)
        s = req.sampling
        body = {
            "model": self.spec.model,
            "messages": messages,
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        }
        if s.stop:
            body["stop"] = list(s.stop)
        if self.spec.enable_thinking is not None:  # vLLM / transformers serve accept chat_template_kwargs
            # not an OpenAI parameter: extra_body sends it as is
            body["extra_body"] = {"chat_template_kwargs": {"enable_thinking": self.spec.enable_thinking}}
        return body

    # ---- one HTTP attempt ----
    async def _post(self, client: openai.AsyncOpenAI, body: dict) -> GenerationResult:
        try:
            # raw response: the JSON is parsed below, so a malformed 200 is caught (and retried) there
            resp = await client.chat.completions.with_raw_response.create(**body, extra_headers=self._headers)
        except openai.APIStatusError as e:
            raise self._status_error(e.status_code, e.response.text, e.response.headers.get("Retry-After")) from None
        raw = resp.text
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            msg = choice["message"]
            content = msg.get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise _Retryable(f"malformed response ({type(e).__name__}): {raw[:200]!r}") from None
        answer, reasoning = split_think(content)
        extra = msg.get("reasoning_content") or msg.get("reasoning") or ""  # DeepSeek / vLLM reasoning parsers
        usage = data.get("usage") or {}
        finish = choice.get("finish_reason") or "stop"
        return GenerationResult(
            text=answer,
            reasoning="\n".join(x for x in (extra.strip(), reasoning) if x),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason="length" if finish == "length" else "stop",
        )

    def _status_error(self, status: int, raw: str, retry_after: str | None) -> Exception:
        if status in RETRY_STATUS or status >= 500:
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            return _Retryable(f"HTTP {status}: {raw[:200]}", wait)
        if status in (401, 403):  # every other request would fail alike: stop the stage, say which key
            env, what = self.spec.api_key_env, "unauthorized" if status == 401 else "forbidden"
            return UserError(
                f"{self.url} answered HTTP {status} ({what}): "
                + (
                    f"check the key in the environment variable {env} (api_key_env)"
                    if env
                    else "the server wants a key: set api_key_env to the NAME of the variable holding it"
                )
            )
        return ValueError(f"HTTP {status}: {raw[:300]}")  # bad request: retrying will not help

    async def _one(
        self, client: openai.AsyncOpenAI, sem: asyncio.Semaphore, req: GenerationRequest
    ) -> GenerationResult:
        try:
            body = self._body(req)
        except Exception as e:  # noqa: BLE001  missing image, too many images: fails alone, no retries
            return GenerationResult(finish_reason="error", error=self._redact(f"{type(e).__name__}: {e}"))
        retries, last = 0, ""
        async with sem:
            for attempt in range(self.spec.max_retries + 1):
                try:
                    res = await self._post(client, body)
                    self.stats["requests"] += 1
                    return GenerationResult(**{**res.__dict__, "retries": retries})
                except _Retryable as e:
                    last, wait = str(e), e.retry_after
                except openai.APIConnectionError as e:  # timeouts (APITimeoutError) included
                    c = e.__cause__  # the transport's own exception says what failed (refused, read timeout, ...)
                    cause = "" if c is None else f" ({type(c).__name__}: {c})" if str(c) else f" ({type(c).__name__})"
                    last, wait = f"{type(e).__name__}: {e}{cause}", None
                except UserError:
                    raise  # authentication: the whole stage stops with one line
                except Exception as e:  # noqa: BLE001  non-retryable; recorded on the result
                    last = f"{type(e).__name__}: {e}"
                    break
                if attempt == self.spec.max_retries:
                    break
                retries += 1
                self.stats["retries"] += 1
                # exponential backoff with jitter, so N clients hitting a 429 do not come back in lockstep
                backoff = min(self.spec.backoff_max_s, self.spec.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
                delay = min(self.spec.backoff_max_s, max(backoff, wait or 0.0))
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %.2fs", self.url, attempt + 1, self._redact(last), delay
                )
                await asyncio.sleep(delay)
        self.stats["requests"] += 1
        self.stats["errors"] += 1
        err = self._redact(f"failed after {retries + 1} attempt(s): {last}")
        log.warning("%s: %s", self.url, err)
        return GenerationResult(finish_reason="error", error=err, retries=retries)

    async def agenerate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        sem = asyncio.Semaphore(self.spec.concurrency)
        # the key is always passed (a placeholder when there is none, never sent: see _headers), so the SDK never
        # falls back to OPENAI_API_KEY and sends an OpenAI key to another host; max_retries=0: the policy is ours
        async with openai.AsyncOpenAI(
            api_key=self._key or "unused",
            base_url=self.spec.base_url,
            timeout=self.spec.timeout_s,
            max_retries=0,
        ) as client:
            # gather keeps input order; each task returns a result, never raises
            return list(await asyncio.gather(*(self._one(client, sem, r) for r in requests)))

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests))
        # called from inside an event loop (notebook): run ours in a thread
        out: list = []
        t = threading.Thread(target=lambda: out.append(asyncio.run(self.agenerate(requests))))
        t.start()
        t.join()
        return out[0]
