"""Exact likelihood ranking: log p(candidate's answer line | prompt) for every candidate, at about one prompt forward.

    from mllmrec.evaluation.likelihood import score_candidates
    scores = score_candidates(model, tokenizer, prompts, completions)   # list of (n_candidates,) arrays

The prompt and all of its candidates' completions are packed into ONE sequence with a tree-shaped attention mask:
the prompt is causal, each completion sees the whole prompt and its own earlier tokens only, and its position ids
continue from the end of the prompt. One forward pass then gives every candidate's exact token log-probs, the same
numbers as scoring `prompt + completion` separately (tested against that brute force), while the shared prompt is
encoded once instead of once per candidate. Only the logits that are needed are projected onto the vocabulary.

With collaborative item tokens (mllmrec.training.item_tokens) every candidate's answer starts with its own single
token, so the candidates' log-probs of that first token come from ONE forward of the prompt (score_next_token):
exactly the first factor of the line likelihood above (tested).
"""

import itertools

import numpy as np
import torch


def tokenize_parts(tokenizer, prompt: str, completions: list[str]) -> tuple[list[int], list[list[int]]]:
    """Prompt and completions tokenized separately (the way SFT and GRPO see them: prompt ids + completion ids)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return prompt_ids, [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]


def tree_inputs(prompt_ids: list[int], comp_ids: list[list[int]], dtype: torch.dtype):
    """input_ids (1, T), position_ids (1, T), additive 4D mask (1, 1, T, T) for the packed prompt + completions."""
    n_p = len(prompt_ids)
    ids = list(prompt_ids)
    pos = list(range(n_p))
    owner = [-1] * n_p  # -1 = prompt token; j = token of completion j
    for j, c in enumerate(comp_ids):
        ids += c
        pos += range(n_p, n_p + len(c))
        owner += [j] * len(c)
    t = len(ids)
    owner_t = torch.tensor(owner)
    idx = torch.arange(t)
    causal = idx[None, :] <= idx[:, None]
    # a key is visible if it is a prompt token, or a token of the query's own completion (causally)
    visible = causal & ((owner_t[None, :] == -1) | (owner_t[None, :] == owner_t[:, None]))
    mask = torch.zeros(t, t, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
    return torch.tensor([ids]), torch.tensor([pos]), mask[None, None]


@torch.inference_mode()
def score_packed(model, prompt_ids: list[int], comp_ids: list[list[int]]) -> np.ndarray:
    """Sum of log-probs of each completion's tokens given the prompt, one forward for all of them."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    ids, pos, mask = tree_inputs(prompt_ids, comp_ids, dtype)
    n_p = len(prompt_ids)
    # which position predicts each completion token: the last prompt token for the first one, then the previous
    predictors, targets, starts = [], [], [0]
    offset = n_p
    for c in comp_ids:
        predictors += [n_p - 1] + list(range(offset, offset + len(c) - 1))
        targets += c
        offset += len(c)
        starts.append(len(targets))
    keep = torch.tensor(sorted(set(predictors)), device=device)
    out = model(
        input_ids=ids.to(device),
        position_ids=pos.to(device),
        attention_mask=mask.to(device),
        logits_to_keep=keep,
        use_cache=False,
    )
    row_of = {p: r for r, p in enumerate(keep.tolist())}
    logits = out.logits[0, [row_of[p] for p in predictors]].float()
    token_logp = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(targets, device=device)[:, None])[:, 0]
    sums = torch.tensor([token_logp[a:b].sum().item() for a, b in itertools.pairwise(starts)])
    return sums.numpy()


def score_candidates(
    model, tokenizer, prompts: list[str], completions: list[list[str]], max_tokens: int = 8192
) -> list[np.ndarray]:
    """Per prompt, the log-likelihood of each of its completions. Completions are packed in groups so that one
    forward never exceeds `max_tokens` (prompt included); a prompt alone longer than that is still scored."""
    results = []
    for prompt, comps in zip(prompts, completions):
        prompt_ids, comp_ids = tokenize_parts(tokenizer, prompt, comps)
        scores, group, used = [], [], len(prompt_ids)
        for c in comp_ids:
            if group and used + len(c) > max_tokens:
                scores.append(score_packed(model, prompt_ids, group))
                group, used = [], len(prompt_ids)
            group.append(c)
            used += len(c)
        scores.append(score_packed(model, prompt_ids, group))
        results.append(np.concatenate(scores))
    return results


@torch.inference_mode()
def score_brute_force(model, tokenizer, prompt: str, completions: list[str]) -> np.ndarray:
    """Reference: one full forward of prompt + completion per candidate (what the packed scorer must equal)."""
    device = next(model.parameters()).device
    prompt_ids, comp_ids = tokenize_parts(tokenizer, prompt, completions)
    out = []
    for c in comp_ids:
        ids = torch.tensor([prompt_ids + c], device=device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        out.append(sum(logp[len(prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(c)))
    return np.array(out)


@torch.inference_mode()
def score_next_token(model, prompt_ids: list[int], token_ids: list[int]) -> np.ndarray:
    """log p(token | prompt) of each candidate token: one forward of the prompt, the last position's log-softmax."""
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([prompt_ids], device=device), logits_to_keep=1, use_cache=False).logits
    return torch.log_softmax(logits[0, -1].float(), dim=-1)[token_ids].cpu().numpy()
