"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item sequence, next-item prediction.

Architecture as in the paper and its reference port: scaled item embeddings + learned positions, pre-LN causal
attention blocks with a point-wise feed-forward, padding masked (also as attention keys, which the reference port
misses), shared input/output item embeddings. Trained with
full softmax cross-entropy over all items at every position (Klenitskiy & Vasilev 2023 show it beats the paper's
one-negative BCE); early stopping on valid NDCG@10 over the persisted valid candidates.
"""

import copy
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mllmrec.config import SasrecParams
from mllmrec.evaluation.metrics import per_sample_scores
from mllmrec.progress import Progress


class SASRec(nn.Module):
    def __init__(self, n_items: int, p: SasrecParams):
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, p.hidden, padding_idx=0)  # index 0 = padding
        self.pos_emb = nn.Embedding(p.max_len + 1, p.hidden, padding_idx=0)
        self.dropout = nn.Dropout(p.dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(p.hidden, eps=1e-8) for _ in range(p.blocks))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(p.hidden, p.heads, dropout=p.dropout, batch_first=True) for _ in range(p.blocks)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(p.hidden, eps=1e-8) for _ in range(p.blocks))
        self.ffns = nn.ModuleList(
            nn.Sequential(
                nn.Linear(p.hidden, p.hidden),
                nn.ReLU(),
                nn.Dropout(p.dropout),
                nn.Linear(p.hidden, p.hidden),
                nn.Dropout(p.dropout),
            )
            for _ in range(p.blocks)
        )
        self.last_norm = nn.LayerNorm(p.hidden, eps=1e-8)
        self.max_len = p.max_len
        for name, param in self.named_parameters():  # xavier init as the reference port; N(0,1) embeddings stall
            if param.dim() > 1:
                nn.init.xavier_normal_(param)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) right-aligned item indices (0 = pad) -> (B, L, H) hidden states."""
        pad = seqs == 0
        x = self.item_emb(seqs) * math.sqrt(self.item_emb.embedding_dim)
        # positions count 1..L over real items, 0 on padding (so padding gets no position signal)
        positions = torch.cumsum(~pad, dim=1) * ~pad
        x = self.dropout(x + self.pos_emb(positions)) * ~pad.unsqueeze(-1)
        length = seqs.size(1)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seqs.device), 1)
        # no attending to the future nor to padding keys; a position may always see itself, so padding rows stay
        # finite (they are zeroed after each block) and left padding cannot change a real item's state
        blocked = (causal[None] | pad[:, None, :]) & ~torch.eye(length, dtype=torch.bool, device=seqs.device)[None]
        blocked = blocked.repeat_interleave(self.attns[0].num_heads, dim=0)
        for attn_norm, attn, ffn_norm, ffn in zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns):
            q = attn_norm(x)
            x = q + attn(q, x, x, attn_mask=blocked, need_weights=False)[0]
            x = ffn_norm(x)
            x = (x + ffn(x)) * ~pad.unsqueeze(-1)
        return self.last_norm(x)

    def score(self, seqs: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """(B, L) histories, (B, C) candidate indices -> (B, C) scores from the last position."""
        last = self.forward(seqs)[:, -1]
        return (self.item_emb(cand) * last.unsqueeze(1)).sum(-1)


def pad_left(seqs: list[list[int]], length: int) -> torch.Tensor:
    """Right-align the last `length` items of each sequence, zeros on the left."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:]
        if tail:
            out[row, length - len(tail) :] = tail
    return torch.from_numpy(out)


@torch.no_grad()
def score_candidates(
    model: SASRec, histories: list[list[int]], candidates: list[list[int]], batch: int = 512
) -> np.ndarray:
    model.eval()
    out = []
    for lo in range(0, len(histories), batch):
        seqs = pad_left(histories[lo : lo + batch], model.max_len)
        out.append(model.score(seqs, torch.tensor(candidates[lo : lo + batch])).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def valid_ndcg_at_10(scores: np.ndarray, target_index: np.ndarray) -> float:
    """NDCG@10 of the target (ties counted against it); unlike HR@10 it still moves when there are 10 candidates."""
    target = scores[np.arange(len(scores)), target_index]
    ranks = (scores >= target[:, None]).sum(1) - 1
    return float(per_sample_scores(ranks, [10])["NDCG@10"].mean())


def busy_processes() -> int:
    """Other processes running right now (Linux /proc/loadavg, lowest of 3 looks 50 ms apart: a stage that just
    ended does not count, unlike the 1-minute load average); 0 where unknown."""
    looks = []
    for _ in range(3):
        try:
            looks.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)  # minus this process
        except (OSError, ValueError, IndexError):
            return 0
        time.sleep(0.05)
    return max(min(looks), 0)


def warn_if_busy(threads: int) -> None:
    """A busy box slows multi-threaded training ~3x (benchmarks/bench_sasrec_threads.py: 2 threads beside one busy
    process 1.79 s/epoch, 1 thread 0.57 s); the thread count is not chosen automatically because it changes the
    trained weights (so the numbers would depend on the load): say so and name the param."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads > 1 and (busy := busy_processes()) + threads > cores:
        print(
            f"sasrec: {busy} other process(es) running on {cores} cores: {threads} threads compete with them (up "
            f"to ~3x slower); baselines.sasrec.threads: 1 avoids it (thread counts give slightly different "
            f"numbers)",
            flush=True,
        )


def train(sequences: list[list[int]], n_items: int, p: SasrecParams, valid: tuple) -> tuple[SASRec, list[dict]]:
    """Train on item-index sequences; `valid` = (histories, candidates, target_index) for early stopping."""
    torch.manual_seed(p.seed)
    torch.set_num_threads(p.threads)
    warn_if_busy(p.threads)
    rng = np.random.default_rng(p.seed)
    model = SASRec(n_items, p)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.9, 0.98), weight_decay=p.weight_decay)
    # input = items[:-1], label = items[1:], both right-aligned: every position predicts the next item
    inputs = pad_left([s[:-1] for s in sequences], p.max_len)
    labels = pad_left([s[1:] for s in sequences], p.max_len)
    best, best_ndcg, waited, log = copy.deepcopy(model.state_dict()), -1.0, 0, []
    with Progress("sasrec epochs", p.epochs) as bar:
        for epoch in range(p.epochs):
            model.train()
            order = rng.permutation(len(sequences))
            total = 0.0
            for lo in range(0, len(order), p.batch_size):
                idx = torch.from_numpy(order[lo : lo + p.batch_size])
                hidden = model(inputs[idx])
                logits = hidden @ model.item_emb.weight[1:].T  # (B, L, n_items), padding row excluded
                mask = labels[idx] > 0
                loss = nn.functional.cross_entropy(logits[mask], labels[idx][mask] - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            ndcg = valid_ndcg_at_10(score_candidates(model, valid[0], valid[1]), valid[2])
            log.append({"epoch": epoch, "loss": total / len(order), "valid_NDCG@10": ndcg})
            bar.advance(1, note=f"loss {total / len(order):.3f} valid NDCG@10 {ndcg:.3f}")
            if ndcg > best_ndcg:
                best, best_ndcg, waited = copy.deepcopy(model.state_dict()), ndcg, 0
            else:
                waited += 1
                if waited >= p.patience:
                    break
    model.load_state_dict(best)
    return model, log
