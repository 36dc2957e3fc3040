"""MambaDM's two local branches side by side: what ``local: mamba`` costs next to ``local: conv``.

Three backbones at the size of ``configs/experiments/backbones.yaml`` (d_model 64, 2 layers,
K = 20 interleaved steps = 60 tokens, batch 32): Decision Mamba (``mamba``, no local branch),
MambaDM with the gated causal convolution (``local: conv``) and MambaDM with a Mamba restarted on
every 6-token sub-sequence (``local: mamba``). Timed: one training step of the backbone alone
(forward with a left-padding mask, backward, ``train`` mode) and one recurrent ``step`` for 10
environments (``no_grad``, ``eval``). Calls alternate between the three, so a busy machine slows
all of them alike; medians over ``--reps`` calls, ratios to Decision Mamba.

    python benchmarks/mambadm_local.py
    python benchmarks/mambadm_local.py --quick
"""

from __future__ import annotations

import argparse

import torch
from timing import median_ms

from lit_seqrl.registry import build_backbone

VARIANTS = {
    "DMamba": ("mamba", {}),
    "MambaDM local=conv": ("mambadm", {"local": "conv", "local_window": 6}),
    "MambaDM local=mamba": ("mambadm", {"local": "mamba", "local_window": 6}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--tokens", type=int, default=60, help="sequence length in tokens (3 per step)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--envs", type=int, default=10, help="batch of the recurrent step")
    p.add_argument("--reps", type=int, default=None, help="timed calls per setting (default 30, quick 8)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reps = args.reps or (8 if args.quick else 30)

    x = torch.randn(args.batch, args.tokens, args.d_model)
    mask = torch.ones(args.batch, args.tokens, dtype=torch.bool)
    mask[: args.batch // 4, : args.tokens // 3] = False  # some rows start near an episode start
    x_t = torch.randn(args.envs, args.d_model)

    models, train_fns, step_fns = {}, [], []
    for label, (name, kwargs) in VARIANTS.items():
        model = build_backbone(name, d_model=args.d_model, n_layers=args.n_layers, **kwargs)
        models[label] = model
        state = model.init_state(args.envs)

        def train_step(model=model):
            model.train()
            model(x, mask).square().mean().backward()
            model.zero_grad(set_to_none=True)

        def step(model=model, state=state):
            model.eval()
            with torch.no_grad():
                model.step(x_t, state)

        train_fns.append(train_step)
        step_fns.append(step)

    for fn in train_fns + step_fns:  # warm-up, untimed
        fn()
    train_ms = median_ms(train_fns, reps)
    step_ms = median_ms(step_fns, 4 * reps)

    print(
        f"d_model {args.d_model}, {args.n_layers} layers, {args.tokens} tokens, batch {args.batch}, "
        f"step batch {args.envs}, {args.threads} threads, {reps} reps"
    )
    print(f"{'backbone':<22}{'params':>9}{'train ms':>11}{'x DMamba':>10}{'step ms':>10}{'x DMamba':>10}")
    for i, (label, model) in enumerate(models.items()):
        n_params = sum(q.numel() for q in model.parameters())
        print(
            f"{label:<22}{n_params:>9}{train_ms[i]:>11.2f}{train_ms[i] / train_ms[0]:>10.2f}"
            f"{step_ms[i]:>10.3f}{step_ms[i] / step_ms[0]:>10.2f}"
        )
    ratio = train_ms[2] / train_ms[1]
    print(f"RESULT mambadm_local_mamba_vs_conv_train: {ratio:.2f} x (goal <= 1.5)")


if __name__ == "__main__":
    main()
