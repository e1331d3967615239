"""sft: renderer-identical tokens, one end of turn, TRL keeps our tokens; a killed run resumes; the merge reloads."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from mllmrec import paths
from mllmrec.config import AugmentParams, PromptParams, SftParams
from mllmrec.prompts import build_messages, load_item_texts, render_prompt
from mllmrec.training.augment import augment
from mllmrec.training.run import prepare_checkpoints, training_dtype
from mllmrec.training.sft import fingerprint, sft_examples, tokenize_examples

ROOT = Path(__file__).resolve().parents[1]
TITLES = ["Heat (1995)", "Toy Story (1995)", "Jumanji (1995)", "Seven (1995)", "GoldenEye (1995)", "Up (2009)"]


def items() -> pl.DataFrame:
    return pl.DataFrame({"item_id": [str(i) for i in range(30)], "title": [TITLES[i % 6] for i in range(30)]})


def samples(n_users: int = 12) -> pl.DataFrame:
    rows = [
        {
            "sample_id": f"{u}:train:9",
            "user_id": str(u),
            "split": "train",
            "history": [str((u + j) % 30) for j in range(9)],
            "target": str((u + 9) % 30),
            "candidates": [str((u + 9) % 30), str((u + 15) % 30), str((u + 20) % 30)],
        }
        for u in range(n_users)
    ]
    cands = pl.DataFrame(rows)
    cots = pl.DataFrame(
        {"sample_id": cands["sample_id"], "cot": "Step 1: likes films.\nStep 4: a family comedy.", "keep": True}
    )
    return augment(cands, cots, AugmentParams(sft_cot_prob=0.25))[0]


def test_prompt_tokens_equal_renderer_and_completion_ends_once(tiny_lm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    s, texts, pp = samples(), load_item_texts(items(), None), PromptParams(captions="none")
    examples = sft_examples(s, texts, tok, pp, enable_thinking=None)
    rows, skipped = tokenize_examples(examples, tok, max_length=4096)
    assert not skipped and len(rows) == s.height
    for row, ex, r in zip(s.iter_rows(named=True), examples, rows):
        prompt = render_prompt(tok, build_messages(row, texts, pp, cot=row["cot"] if row["has_cot"] else None), None)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        n = r["completion_mask"].index(1)
        assert r["input_ids"][:n] == p_ids and n == len(p_ids)
        assert ("<think>" in prompt) == row["has_cot"]
        completion = tok.decode(r["input_ids"][n:])
        assert completion == f"[ITEM_{row['target']}] {texts[row['target']].title}<|im_end|>"
        assert r["input_ids"].count(tok.eos_token_id) == prompt.count("<|im_end|>") + 1  # one end of the answer
    assert tokenize_examples(examples, tok, max_length=50)[1] == s["sample_id"].to_list()  # counted, not cut


def test_history_item_loss_marks_each_history_item_after_the_first(tiny_lm_dir):
    """sft.loss completion_and_history_items: the loss sits on the answer and on history items 2..n (each predicted
    from the items before it), never on the first history item, the candidates or the CoT's text."""
    from transformers import AutoTokenizer

    from mllmrec.errors import UserError
    from mllmrec.training.item_tokens import add_item_tokens

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    s, texts, pp = samples(), load_item_texts(items(), None), PromptParams(captions="none")
    with pytest.raises(UserError, match="item_tokens.enabled"):  # a title's first subword is no item prediction
        tokenize_examples(sft_examples(s, texts, tok, pp, None), tok, 4096, history_item_loss=True)
    add_item_tokens(tok, items()["item_id"].to_list())
    examples = sft_examples(s, texts, tok, pp, None)
    plain, _ = tokenize_examples(examples, tok, 4096)
    rows, _ = tokenize_examples(examples, tok, 4096, history_item_loss=True)
    for row, r, p in zip(s.iter_rows(named=True), rows, plain):
        assert r["input_ids"] == p["input_ids"]
        n = p["completion_mask"].index(1)  # where the completion starts
        assert r["completion_mask"][n:] == p["completion_mask"][n:]
        marked = [tok.decode([t]) for t, m in zip(r["input_ids"][:n], r["completion_mask"][:n]) if m]
        assert marked == [f"[ITEM_{i}]" for i in row["history"][1:]]


def test_trl_keeps_our_tokens_and_masks_the_prompt(tiny_lm_dir, tmp_path):
    """TRL gets a tokenized dataset: no second template, no extra EOS, labels only on the completion."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    rows, _ = tokenize_examples(
        sft_examples(samples(2), load_item_texts(items(), None), tok, PromptParams(captions="none"), None), tok, 4096
    )
    for loss in ("completion", "all"):
        args = SFTConfig(
            output_dir=str(tmp_path),
            completion_only_loss=loss == "completion",
            report_to="none",
            bf16=False,
            activation_checkpointing=False,
            max_length=4096,
        )
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_lm_dir),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        got = trainer.train_dataset[0]
        assert got["input_ids"] == rows[0]["input_ids"]
        expect = [t if m or loss == "all" else -100 for t, m in zip(rows[0]["input_ids"], rows[0]["completion_mask"])]
        assert got["labels"] == expect


def test_checkpoints_of_another_run_are_cleared(tmp_path):
    ckpt = tmp_path / "ckpt"
    rows = [{"input_ids": [1, 2, 3], "completion_mask": [0, 1, 1]}]
    p = SftParams(checkpoint_dir=str(ckpt))
    fp = fingerprint(rows, "m", "", p)
    assert prepare_checkpoints(ckpt, fp) is None
    for step in (2, 4, 6):
        (ckpt / f"checkpoint-{step}").mkdir()
        if step < 6:  # checkpoint-6 was killed mid-save: no trainer_state.json
            (ckpt / f"checkpoint-{step}/trainer_state.json").write_text("{}")
    assert prepare_checkpoints(ckpt, fp) == ckpt / "checkpoint-4"
    (ckpt / "checkpoint-4/trainer_state.json").write_text('{"global_step": 4}')
    assert prepare_checkpoints(ckpt, fp, max_steps=8) == ckpt / "checkpoint-4"  # unfinished: resume
    (ckpt / "completions.jsonl").write_text("{}\n")  # a file of the run (GRPO's completion samples)
    assert prepare_checkpoints(ckpt, fp, 4, "grpo", ("completions.jsonl",)) is None  # finished: trained again
    assert not list(ckpt.glob("checkpoint-*")) and not (ckpt / "completions.jsonl").exists()
    assert fingerprint(rows, "m", "", p.model_copy(update={"save_steps": 7})) == fp  # saving cadence: same run
    (ckpt / "checkpoint-2").mkdir()
    fp2 = fingerprint(rows, "m", "", p.model_copy(update={"lr": 1e-3}))
    assert fp2 != fp and prepare_checkpoints(ckpt, fp2) is None and not list(ckpt.glob("checkpoint-*"))


def project(tmp: Path, model_dir: Path, item_rows: str | None = None) -> Path:
    """A minimal project folder the sft stage runs in: params.yaml + its inputs. item_rows: collaborative item tokens
    (a table of seeded vectors, sft.item_rows = frozen | trained); None: text only (an empty table)."""
    from mllmrec.training.item_tokens import item_table

    for sub in ("augment", "ingest", "split", "item_tokens"):
        (tmp / "data" / sub).mkdir(parents=True)
    samples(16).write_parquet(tmp / "data/augment/sft.parquet")
    items().write_parquet(tmp / "data/ingest/items.parquet")
    checkpoint = (
        {
            "state_dict": {"item_emb.weight": torch.randn(31, 8, generator=torch.Generator().manual_seed(0))},
            "items": items()["item_id"].to_list(),
        }
        if item_rows
        else None
    )
    item_table(items(), checkpoint).write_parquet(tmp / "data/item_tokens/items.parquet")
    valid = samples(4).select("sample_id", "user_id", "history", "candidates", "target")
    valid.with_columns(split=pl.lit("valid")).write_parquet(tmp / "data/split/candidates_n2.parquet")
    spec = {"engine": "transformers", "model": str(model_dir)}
    params = {
        "prompt": {"captions": "none"},
        "models": {"captioner": spec, "drafter": spec, "editor": spec, "policy": spec},
        "sft": {
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "lr": 0.01,
            "max_steps": 24,
            "batch_size": 2,
            "grad_accum": 1,
            "save_steps": 4,
            "max_length": 1024,
            "monitor": {"every": 8, "samples": 4, "train_samples": 4, "num_negatives": 2, "ks": [1]},
            **({"item_rows": item_rows} if item_rows else {}),
        },
    }
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("item_rows", [None, "trained"])
def test_sft_changes_weights_resumes_after_kill_and_merges(tiny_lm_dir, tmp_path, item_rows):
    """Text only, and with trained collaborative item tokens (their rows resume from the checkpoint with the LoRA and
    are merged into an extended vocabulary that plain transformers loads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mllmrec.prompts import item_token_ids

    proj = project(tmp_path, tiny_lm_dir, item_rows)
    cmd = [sys.executable, str(ROOT / "stages/sft.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a 130k-param model: threads only fight over 2 shared cores
    log = (tmp_path / "first.log").open("w")  # a file, not a pipe: a full pipe would block the child
    first = subprocess.Popen(cmd, cwd=proj, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 120
    while not list(proj.glob("checkpoints/sft/checkpoint-*/trainer_state.json")):
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # a real kill: no cleanup, no final save
    first.wait()
    assert not (proj / "models/sft").exists()
    killed_at = max(
        int(p.name.split("-")[1])
        for p in proj.glob("checkpoints/sft/checkpoint-*")
        if (p / "trainer_state.json").exists()
    )
    assert killed_at < 24

    second = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    info = json.loads((proj / "models/sft/sft_info.json").read_text())
    assert info["resumed_from_step"] >= killed_at >= 4 and info["global_step"] == 24
    assert f"(step {info['resumed_from_step']})" in second.stdout

    def series(name: str) -> pl.DataFrame:
        return pl.read_csv(proj / paths.live_series(paths.SFT_LIVE_PLOTS, name), separator="\t")

    loss = series("loss")
    assert loss.columns == ["step", "loss"]  # no timestamp column
    assert loss["step"].to_list() == list(range(1, 25))  # one curve across the kill: rebuilt from the restored history
    valid, train = series("valid_HR@1"), series("train_HR@1")
    assert valid["step"].to_list() == [0, 8, 16, 24] and valid["valid_HR@1"].is_between(0, 1).all()
    assert train["step"].to_list() == [0, 8, 16, 24] and train["train_HR@1"].is_between(0, 1).all()  # across the kill
    summary = json.loads((proj / paths.SFT_LIVE_METRICS).read_text())  # `dvc exp show` columns
    assert summary["step"] == 24 and summary["loss"] == loss["loss"][-1]

    merged = AutoModelForCausalLM.from_pretrained(proj / "models/sft")
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=merged.dtype)  # compare in the saved dtype
    assert str(merged.dtype) == f"torch.{info['dtype']}" == str(training_dtype("auto"))  # saved in the training dtype
    assert not any("lora" in k or "trainable_tokens" in k for k in merged.state_dict())
    tok = AutoTokenizer.from_pretrained(proj / "models/sft")
    assert tok.chat_template and tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    n_base = base.get_input_embeddings().weight.shape[0]
    emb = merged.get_input_embeddings().weight
    changed = [k for k, v in base.state_dict().items() if not torch.equal(v, merged.state_dict()[k][: len(v)])]
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)
    if item_rows is None:
        assert not any("embed" in k for k in changed) and emb.shape[0] == n_base  # LoRA touches only its targets
        return
    ids = item_token_ids(tok)
    assert len(ids) == 30 and emb.shape[0] == n_base + 30 == info["vocab_after"]
    assert torch.equal(emb[:n_base], base.get_input_embeddings().weight)  # the old vocabulary is untouched
    start = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=merged.dtype)
    from mllmrec.training.item_tokens import init_item_embeddings

    init_item_embeddings(
        start,
        AutoTokenizer.from_pretrained(tiny_lm_dir),
        pl.read_parquet(proj / "data/item_tokens/items.parquet"),
        seed=0,
    )
    moved = (emb[n_base:] - start.get_input_embeddings().weight[n_base:]).norm(dim=1)
    assert (moved > 0).sum() >= 10  # the rows of items in the trained answers moved (trained rows, merged)


def test_project_params_validate():
    from mllmrec.config import load_section

    p = load_section("sft", SftParams, ROOT / "params.yaml")
    assert p.checkpoint_dir.startswith("checkpoints/")  # git-ignored, never a DVC output
    assert "/checkpoints/" in (ROOT / ".gitignore").read_text()


def test_fused_lm_head_scores_only_label_positions_on_cpu(tiny_lm_dir, monkeypatch):
    """cpu_speed_trainer's shim: TRL's fused head projects only the label positions on CPU (it projected every
    position, 5.1 s of an 8.7 s SmolLM2 step), with the same log-probs as plain logits. Fails if TRL renames or
    stops reading the switch, so the speed-up cannot vanish silently on an upgrade."""
    import torch
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from mllmrec.training.run import cpu_speed_trainer

    monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton)  # undo the shim after this test
    cpu_speed_trainer(SFTTrainer, "compute_loss")
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    trl_utils.add_fused_lm_head(model)
    rows_seen = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(
        trl_utils._ChunkedLogProbFunction,
        "apply",
        lambda hidden, *a: rows_seen.append(hidden.shape[0]) or apply(hidden, *a),
    )
    ids = torch.randint(5, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[0, 9:], labels[1, 11:] = ids[0, 9:], ids[1, 11:]  # 3 + 1 answer tokens
    with torch.no_grad():
        fused = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        ref = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1).gather(
            2, labels[:, 1:].clamp(min=0)[..., None]
        )[..., 0] * (labels[:, 1:] != -100)
    assert rows_seen == [4]
    torch.testing.assert_close(fused, ref, atol=1e-4, rtol=1e-4)
