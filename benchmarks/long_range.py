"""Long-range recall: read a class token, wait ~1,000 steps, name the class.

Sequence ``[c, filler × (L-2), ?]`` with ``c`` one of ``--classes`` tokens, fillers drawn from
``--distractors`` other tokens (default 1: a blank, as in the copy-memory task; more makes it harder)
and a query token at the end; the model must output ``c`` at the last position, ``L-1`` steps after
seeing it. S4 (HiPPO-LegS memory, FFT convolution) against an LSTM of about the same size
(``torch.nn.LSTM``); each trains until it solves the task or runs out of the same wall-clock budget
or step limit. Chance is ``1/classes``.

    python benchmarks/long_range.py            # L = 1024 (recall 1,023 steps back), ~3 min on 1 core
    python benchmarks/long_range.py --quick    # L = 512, 45 s budget per model
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_seqrl.backbones.s4 import S4Backbone


def make_batch(
    batch: int, L: int, classes: int, distractors: int, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Tokens ``(batch, L)`` and targets ``(batch,)``: classes are ``0..C-1``, distractors next, query last."""
    target = torch.randint(classes, (batch,), generator=g)
    x = torch.randint(classes, classes + distractors, (batch, L), generator=g)
    x[:, 0] = target
    x[:, -1] = classes + distractors  # the query token
    return x, target


class S4Classifier(nn.Module):
    def __init__(self, vocab: int, classes: int, d_model: int, n_layers: int, d_state: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        # dt_max small enough that some channels keep a memory as long as the sequence (~1/Δ steps).
        self.backbone = S4Backbone(d_model, n_layers=n_layers, d_state=d_state, dt_min=1e-4, dt_max=1e-1)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(self.embed(x))[:, -1])


class LSTMClassifier(nn.Module):
    def __init__(self, vocab: int, classes: int, d_model: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.lstm = nn.LSTM(d_model, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.lstm(self.embed(x))[0][:, -1])


def train(model: nn.Module, args: argparse.Namespace, lr: float) -> dict:
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    vocab_args = (args.L, args.classes, args.distractors)
    start, step, recent = time.perf_counter(), 0, []
    while step < args.max_steps and time.perf_counter() - start < args.budget_s:
        x, y = make_batch(args.batch, *vocab_args, g)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        recent = [*recent, (logits.argmax(-1) == y).float().mean().item()][-10:]
        if step % 25 == 0:
            print(
                f"  step {step:4d}  loss {loss.item():.3f}  train acc (last 10) {sum(recent) / len(recent):.2f}"
            )
        if len(recent) == 10 and min(recent) == 1.0:
            break  # solved: stop early to save CPU
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        x, y = make_batch(args.eval_size, *vocab_args, torch.Generator().manual_seed(10_000 + args.seed))
        acc = (model(x).argmax(-1) == y).float().mean().item()
    return {
        "acc": acc,
        "steps": step,
        "seconds": seconds,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="L=512 and a smaller time budget")
    p.add_argument("--L", type=int, default=None, help="sequence length (recall distance L-1)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--distractors", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock training budget per model")
    p.add_argument("--max-steps", type=int, default=600)
    p.add_argument("--eval-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--models", default="S4,LSTM", help="comma-separated subset of S4,LSTM")
    p.add_argument("--threads", type=int, default=1, help="torch threads (small batched solves scale badly)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.L = args.L or (512 if args.quick else 1024)
    args.budget_s = args.budget_s or (45.0 if args.quick else 120.0)
    vocab = args.classes + args.distractors + 1

    print(
        f"recall the first token {args.L - 1} steps back; {args.classes} classes, chance {1 / args.classes:.3f}"
    )
    builders = {
        "S4": lambda: S4Classifier(vocab, args.classes, args.d_model, 2, 64),
        "LSTM": lambda: LSTMClassifier(vocab, args.classes, args.d_model, 64),
    }
    results = {}
    for name in args.models.split(","):
        torch.manual_seed(args.seed)
        print(name)
        results[name] = train(builders[name](), args, lr=args.lr)

    print(f"\n{'model':<8}{'params':>9}{'steps':>8}{'train s':>10}{'test acc':>10}")
    for name, r in results.items():
        print(f"{name:<8}{r['params']:>9}{r['steps']:>8}{r['seconds']:>10.1f}{r['acc']:>10.3f}")
    if "S4" in results:
        print(f"RESULT long_range_s4_accuracy: {results['S4']['acc']:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
