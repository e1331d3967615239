"""The generation protocol every engine implements: a batch of requests in, one result per request out.

Stages build `GenerationRequest`s and call `engine.generate(requests)`; they never branch on which engine runs.
Sampling parameters are always explicit here, never inherited from a model's generation_config.json.

Extensions (part A, compatible; for part B and later stages):
- Images: `request.images` fill the `{"type": "image"}` parts of list-valued message contents, in order. If every
  content is a plain str, the images go in front of the first user message's text. `with_image_parts()` does this.
- `GenerationResult.retries`: how many extra attempts the request needed (openai engine; 0 elsewhere).
- `split_think()` separates `<think>...</think>` from the answer; every engine fills `reasoning` with it.
- `load_image(path, max_pixels)`: RGB + downscale to the pixel cap, the same in every engine.
- Engines build from an `EngineSpec` (mllmrec.config) via `mllmrec.engines.build_engine(spec)`.
"""

import re
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[dict, ...]  # OpenAI-style chat messages: {"role": ..., "content": str}
    images: tuple[str, ...] = ()  # absolute paths of images referenced by the messages, in order
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class GenerationResult:
    text: str = ""  # the answer, with any <think>...</think> reasoning removed
    reasoning: str = ""  # separated <think> content (reasoning models), "" otherwise
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""  # "stop" | "length" | "error"
    error: str = ""  # non-empty when the request failed after retries; text is then ""
    retries: int = 0  # extra attempts this request needed (openai engine), recorded rather than hidden


class Engine(Protocol):
    model_id: str  # hub id or local folder, recorded next to every output
    revision: str

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]: ...


_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)


def split_think(text: str) -> tuple[str, str]:
    """(answer, reasoning): `<think>` blocks removed from the answer. An unclosed block is all reasoning.

    >>> split_think("<think> hmm </think> [ITEM_3] Heat")
    ('[ITEM_3] Heat', 'hmm')
    >>> split_think("plain answer")
    ('plain answer', '')
    >>> split_think("trace only</think>answer")  # templates that open <think> in the prompt
    ('answer', 'trace only')
    """
    if "<think>" not in text and "</think>" in text:
        reasoning, _, answer = text.partition("</think>")
        return answer.strip(), reasoning.strip()
    reasoning = "\n".join(m.strip() for m in _THINK.findall(text))
    return _THINK.sub("", text).strip(), reasoning.strip()


def with_image_parts(messages: tuple[dict, ...], n_images: int) -> list[dict]:
    """Messages in processor form (content = list of parts) with exactly `n_images` `{"type": "image"}` parts."""

    def parts(content) -> list[dict]:
        return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)

    out = [{**m, "content": parts(m["content"])} for m in messages]
    placed = sum(p.get("type") == "image" for m in out for p in m["content"])
    if placed == 0 and n_images:
        first_user = next((m for m in out if m["role"] == "user"), None)
        if first_user is None:
            raise ValueError("request has images but no user message to attach them to")
        first_user["content"] = [{"type": "image"} for _ in range(n_images)] + first_user["content"]
    elif placed != n_images:
        raise ValueError(f"messages reference {placed} images but the request carries {n_images}")
    return out


def load_image(path: str, max_pixels: int) -> Image.Image:
    """RGB image, downscaled (aspect kept) so width*height <= max_pixels: bounds visual tokens per image."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    w, h = im.size
    if w * h > max_pixels:
        scale = (max_pixels / (w * h)) ** 0.5
        im = im.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BICUBIC)
    return im
