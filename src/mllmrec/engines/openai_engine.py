"""Any OpenAI-compatible chat endpoint (vLLM server, `transformers serve`, hosted APIs), async with bounded concurrency.

    export DEEPSEEK_API_KEY=...        # the key lives only in the environment
    spec = EngineSpec(engine="openai", model="deepseek-reasoner", base_url="https://api.deepseek.com/v1",
                      api_key_env="DEEPSEEK_API_KEY", concurrency=8, max_retries=3)
    OpenAIEngine(spec).generate(requests)

Retries 429 / 5xx / 408 / timeouts / connection errors / malformed JSON with exponential backoff + jitter (Retry-After
honoured, capped). Other 4xx fail at once. A request that still fails becomes a result with `error` set: the batch is
never lost. The API key is read from the env var named in params and is redacted from every error and log line.
`<think>` blocks and `reasoning_content` fields go to `reasoning`, not to `text`.
"""

import asyncio
import base64
import io
import json
import logging
import os
import random
import threading

import aiohttp

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
            body["chat_template_kwargs"] = {"enable_thinking": self.spec.enable_thinking}
        return body

    # ---- one HTTP attempt ----
    async def _post(self, session: aiohttp.ClientSession, body: dict) -> GenerationResult:
        async with session.post(self.url, json=body) as resp:
            raw = await resp.text()
            if resp.status in RETRY_STATUS or resp.status >= 500:
                retry_after = resp.headers.get("Retry-After")
                try:
                    retry_after = float(retry_after) if retry_after else None
                except ValueError:
                    retry_after = None
                raise _Retryable(f"HTTP {resp.status}: {raw[:200]}", retry_after)
            if resp.status in (401, 403):  # every other request would fail alike: stop the stage, say which key
                env, what = self.spec.api_key_env, "unauthorized" if resp.status == 401 else "forbidden"
                raise UserError(
                    f"{self.url} answered HTTP {resp.status} ({what}): "
                    + (
                        f"check the key in the environment variable {env} (api_key_env)"
                        if env
                        else "the server wants a key: set api_key_env to the NAME of the variable holding it"
                    )
                )
            if resp.status >= 400:
                raise ValueError(f"HTTP {resp.status}: {raw[:300]}")  # bad request: retrying will not help
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

    async def _one(self, session, sem: asyncio.Semaphore, req: GenerationRequest) -> GenerationResult:
        try:
            body = self._body(req)
        except Exception as e:  # noqa: BLE001  missing image, too many images: fails alone, no retries
            return GenerationResult(finish_reason="error", error=self._redact(f"{type(e).__name__}: {e}"))
        retries, last = 0, ""
        async with sem:
            for attempt in range(self.spec.max_retries + 1):
                try:
                    res = await self._post(session, body)
                    self.stats["requests"] += 1
                    return GenerationResult(**{**res.__dict__, "retries": retries})
                except _Retryable as e:
                    last, wait = str(e), e.retry_after
                except (TimeoutError, aiohttp.ClientError) as e:
                    last, wait = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, None
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
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        timeout = aiohttp.ClientTimeout(total=self.spec.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.spec.concurrency)
        sem = asyncio.Semaphore(self.spec.concurrency)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
            # gather keeps input order; each task returns a result, never raises
            return list(await asyncio.gather(*(self._one(session, sem, r) for r in requests)))

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
