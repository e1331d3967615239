"""The one prompt renderer: SFT, GRPO and evaluation all build their prompts and answers here.

    from mllmrec.prompts import load_item_texts, build_messages, render_prompt, render_completion, parse_answer
    texts = load_item_texts(items_df, captions_df)
    messages = build_messages(sample, texts, params, cot=None)          # chat messages (system + user)
    prompt = render_prompt(tokenizer, messages, enable_thinking=False)   # chat template applied, as text
    completion = render_completion(tokenizer, messages, answer_line(target, texts), enable_thinking=False)

History and candidates are numbered lines `[ITEM_<id>] <title>`, optionally followed by the item's caption (the
textualized image). A CoT, when a training sample carries one, sits in a `<think>` block marked "for reference only"
inside the user turn. The answer is one line `[ITEM_<id>] <title>`. The chat template is applied by one function,
with `enable_thinking` passed explicitly, so the same sample gives the same tokens in every stage.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mllmrec import paths
from mllmrec.config import PromptParams
from mllmrec.errors import UserError

ITEM_TAG = re.compile(r"\[ITEM_([A-Za-z0-9][A-Za-z0-9_.\-]*)\]")


@dataclass(frozen=True)
class ItemText:
    title: str
    caption: str = ""  # "" when the item has no usable image or its caption failed
    image: str | None = None  # absolute image path (only when loaded with an image root: the VLM drafter reads it)
    image_sha256: str | None = None


def load_item_texts(
    items: pl.DataFrame, captions: pl.DataFrame | None, image_root: Path | None = None
) -> dict[str, ItemText]:
    """item_id -> title (+ caption when there is one without error; + image path and sha256 with `image_root`).
    The one item-text loader: policy prompts, the CoT drafter/editor and the CoT assessment all read it."""
    caps: dict[str, str] = {}
    if captions is not None:
        ok = captions.filter(pl.col("caption").fill_null("") != "")
        if "error" in ok.columns:
            ok = ok.filter(pl.col("error").fill_null("") == "")
        caps = dict(zip(ok["item_id"], ok["caption"]))
    out = {}
    for r in items.iter_rows(named=True):
        image = sha = None
        if image_root is not None and r.get("image_ok") and r.get("image_path"):
            image, sha = str((image_root / r["image_path"]).resolve()), r["image_sha256"]
        out[r["item_id"]] = ItemText(r["title"], " ".join(caps.get(r["item_id"], "").split()), image, sha)
    return out


def answer_line(item_id: str, texts: dict[str, ItemText], answer: str = "tag_and_title") -> str:
    """The answer format (`prompt.answer`): `[ITEM_<id>] <title>`, or the tag alone.

    >>> answer_line("50", {"50": ItemText("Usual Suspects, The (1995)")})
    '[ITEM_50] Usual Suspects, The (1995)'
    >>> answer_line("50", {"50": ItemText("Usual Suspects, The (1995)")}, "tag")
    '[ITEM_50]'
    """
    return item_token(item_id) if answer == "tag" else f"{item_token(item_id)} {texts[item_id].title}"


def item_token(item_id: str) -> str:
    """An item's tag, `[ITEM_<id>]`: one token of the vocabulary for a policy with collaborative item tokens
    (mllmrec.training.item_tokens), plain text for any other tokenizer. The prompt text is the same for both."""
    return f"[ITEM_{item_id}]"


def item_token_ids(tokenizer) -> dict[str, int]:
    """{item_id: token id} of the item tokens a tokenizer holds ({} for a plain tokenizer)."""
    out = {}
    for text, tid in tokenizer.get_added_vocab().items():
        if m := ITEM_TAG.fullmatch(text):
            out[m.group(1)] = tid
    return out


def item_line(
    n: int, item_id: str, texts: dict[str, ItemText], with_caption: bool, max_words: int | None = None
) -> str:
    """`n. [ITEM_<id>] <title> | image: <caption>`, the caption cut to its first `max_words` words: the policy's
    line (prompt.max_caption_words). The CoT drafter/editor read their own line, mllmrec.cot.text.item_line, cut in
    characters (max_caption_chars) and reporting what it had to work around; both take the texts loaded here.

    >>> item_line(2, "7", {"7": ItemText("Up (2009)", "A red house lifted by balloons")}, True, 3)
    '2. [ITEM_7] Up (2009) | image: A red house'
    """
    if item_id not in texts:
        raise UserError(f"item {item_id!r} is in a sample but not in {paths.ITEMS}")
    line = f"{n}. {answer_line(item_id, texts)}"
    caption = " ".join(texts[item_id].caption.split()[:max_words])  # prompt length is the cost of every stage
    return f"{line} | image: {caption}" if with_caption and caption else line


def build_messages(
    sample: dict, texts: dict[str, ItemText], params: PromptParams, cot: str | None = None
) -> list[dict]:
    """Chat messages for one sample (keys: history, candidates). `cot` only for training samples that carry one."""
    captions, words = params.captions, params.max_caption_words
    history = [
        item_line(n, i, texts, captions in ("history", "all"), words) for n, i in enumerate(sample["history"], 1)
    ]
    cands = [item_line(n, i, texts, captions == "all", words) for n, i in enumerate(sample["candidates"], 1)]
    parts = [
        "The user interacted with these items, oldest first:",
        *history,
        "",
        "Candidate items:",
        *cands,
        "",
    ]
    if cot:
        parts += ["<think>", cot.strip(), "</think>", "(The reasoning above is for reference only.)", ""]
    answer = "[ITEM_<id>]" if params.answer == "tag" else "[ITEM_<id>] <title>"
    parts.append(
        f"Which candidate will the user interact with next? Answer with exactly one line: {answer}, "
        "copied from the candidate list."
    )
    return [{"role": "system", "content": params.system}, {"role": "user", "content": "\n".join(parts)}]


def render_prompt(tokenizer, messages: list[dict], enable_thinking: bool | None) -> str:
    """The chat template applied once, the same way for SFT, GRPO and evaluation (generation prompt included)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError(
            f"{tokenizer.name_or_path}: the tokenizer has no chat template; pick a chat/instruct model "
            "or add a template to its tokenizer_config.json"
        )
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def completion_template(tokenizer, messages: list[dict], enable_thinking: bool | None) -> tuple[str, str]:
    """(prefix, suffix) around the answer in the assistant turn, as the template writes it after `render_prompt`,
    ending exactly once with the end-of-turn (= eos) token: completion = prefix + answer + suffix (ChatML: "",
    "<|im_end|>"). What a template writes after that token (ChatML: a newline) is never generated, so it is neither
    trained (SFT) nor scored (likelihood ranking). Rendered once per prompt, not once per candidate."""
    eos = tokenizer.eos_token
    if not eos:
        raise UserError(f"{tokenizer.name_or_path}: the tokenizer has no eos_token; answers need an end")
    prompt = render_prompt(tokenizer, messages, enable_thinking)
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    sentinel = "\x00ANSWER\x00"
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": sentinel}], tokenize=False, add_generation_prompt=False, **kwargs
    )
    if not full.startswith(prompt) or sentinel not in full:
        # templates that rewrite earlier turns (e.g. drop past <think>) break prefix-ness: answer + eos
        return "", eos
    prefix, suffix = full[len(prompt) :].split(sentinel, 1)
    cut = suffix.find(eos)
    return prefix, suffix[: cut + len(eos)] if cut >= 0 else suffix + eos


def render_completion(tokenizer, messages: list[dict], answer: str, enable_thinking: bool | None) -> str:
    """The assistant turn for `answer` (answer + end-of-turn): SFT's target and the likelihood ranker's scored text."""
    prefix, suffix = completion_template(tokenizer, messages, enable_thinking)
    return prefix + answer + suffix


def answer_part(text: str) -> str | None:
    """The answer after the reasoning: the text after the last `</think>` (all of it without one; Qwen3-style
    templates may put the opening tag in the prompt), or None when a `<think>` is still open after it.

    >>> answer_part("<think>[ITEM_7]?</think> [ITEM_5]"), answer_part("<think>never closed")
    (' [ITEM_5]', None)
    """
    cut = text.rfind("</think>")  # linear time (a regex over `<think>` runs could go quadratic on adversarial text)
    answer = text[cut + len("</think>") :] if cut >= 0 else text
    return None if "<think>" in answer else answer


def parse_answer(text: str) -> list[str]:
    """Item ids of the answer part in the order the model wrote them, duplicates dropped (the first mention counts).

    What counts as a valid answer, in one place: evaluation (this function) reads every id of the answer as a ranked
    list and counts ids outside the candidates; GRPO's reward (mllmrec.training.rewards.parse) reads the same ids but is
    strict: more than `reward.max_answers` ids (1 for the paper's reward) or any id outside the candidates is a
    format error there, so `[ITEM_5] or [ITEM_7]` ranks 5 then 7 here and earns the bad-format reward in GRPO.

    >>> parse_answer("[ITEM_5] Heat (1995)\\nor maybe [ITEM_7] Up, [ITEM_5]")
    ['5', '7']
    >>> parse_answer("I think Heat"), parse_answer("<think>[ITEM_9]?</think>[ITEM_3]")
    ([], ['3'])
    """
    answer = answer_part(text)
    return [] if answer is None else list(dict.fromkeys(ITEM_TAG.findall(answer)))
