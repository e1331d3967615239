"""GRPO samples item tokens among the prompt's candidates only (`grpo.constrain_to_candidates`, item-token policies).

    trainer_cls = candidates_only(GRPOTrainer, rows, tokenizer)   # rows: mllmrec.training.grpo.grpo_rows

Why: an item-token policy after a short SFT names an item token outside the candidate list in most sampled answers
(measured on the CPU study: 102 of 136 logged completions), which the reward scores as a format error for every
completion of the group alike; such a group has zero advantage, so GRPO learns nothing. Masking the other item tokens
while sampling (the constrained decoding LLM recommenders use, e.g. TIGER's and LC-Rec's) makes every item-token answer
a candidate, so a group's rewards differ by whether it hit.

The loss keeps TRL's log-probabilities of the full vocabulary. At the answer's item position every completion of a
group shares its prompt, so log p(item) and the masked log q(item) differ by the same log-normaliser for all of them;
GRPO's advantages sum to zero within a group, so that term cancels and the update is the masked policy's. Evaluation
ranks the candidates by likelihood, which the mask does not change.

Transformers generation only: vLLM's per-request `allowed_token_ids` cannot be passed through TRL's generation client,
so the params check refuses the combination.
"""

from contextlib import contextmanager

from mllmrec.errors import UserError
from mllmrec.prompts import item_token_ids


def allowed_by_prompt(rows: list[dict], tokenizer) -> dict[tuple[int, ...], list[int]]:
    """{the prompt's token ids, as TRL tokenizes the prompt string: its candidates' item-token ids}."""
    ids = item_token_ids(tokenizer)
    if not ids:
        raise UserError(
            "grpo.constrain_to_candidates: the policy's tokenizer has no item tokens (item_tokens.enabled: true "
            "makes them); set it false for a text-only policy"
        )
    allowed = {}
    for r in rows:
        missing = [c for c in r["candidates"] if c not in ids]
        if missing:
            raise UserError(f"grpo.constrain_to_candidates: sample {r['sample_id']}: no item token for {missing[:3]}")
        allowed[tuple(tokenizer(r["prompt"])["input_ids"])] = [ids[c] for c in r["candidates"]]
    return allowed


class CandidateItemsOnly:
    """A transformers logits processor: in row b, every item token not in `allowed[b]` gets -inf (other tokens keep
    their scores, so the answer's title and the end of the turn are still the model's)."""

    def __init__(self, allowed: list[list[int]], item_ids: list[int]):
        self.allowed, self.item_ids = allowed, item_ids

    def __call__(self, input_ids, scores):
        import torch

        masked = torch.zeros_like(scores, dtype=torch.bool)
        masked[:, self.item_ids] = True
        for b, ids in enumerate(self.allowed):
            masked[b, ids] = False
        return scores.masked_fill(masked, float("-inf"))


def candidates_only(base, rows: list[dict], tokenizer):
    """`base` (TRL's GRPOTrainer or a subclass) whose transformers generation samples with CandidateItemsOnly; each
    generation row's candidates are looked up by its prompt's token ids (`rows`: mllmrec.training.grpo.grpo_rows)."""
    allowed, item_ids = allowed_by_prompt(rows, tokenizer), sorted(item_token_ids(tokenizer).values())

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        try:
            per_row = [allowed[tuple(p)] for p in prompt_ids]
        except KeyError:
            raise UserError(
                "grpo.constrain_to_candidates: a prompt TRL generated for is not one of data/augment/grpo.parquet's "
                "(truncated?)"
            ) from None
        model = self.accelerator.unwrap_model(self.model_wrapped)  # the object TRL's generation unwraps
        with _logits_processor(model, CandidateItemsOnly(per_row, item_ids)):
            return base._generate_single_turn(self, prompt_ids, *args, **kwargs)

    return type(base.__name__, (base,), {"_generate_single_turn": _generate_single_turn})


@contextmanager
def _logits_processor(model, processor):
    """Within the block, `model.generate` also runs `processor` (TRL's generate call has no hook for one)."""
    from transformers import LogitsProcessorList

    saved = model.__dict__.get("generate")  # an instance attribute to put back, if any
    generate = model.generate
    model.generate = lambda *a, **kw: generate(*a, logits_processor=LogitsProcessorList([processor]), **kw)
    try:
        yield
    finally:
        if saved is None:
            del model.generate  # the class's method again
        else:
            model.generate = saved
