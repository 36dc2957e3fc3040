"""Per-token inference latency after 10 and after 1000 tokens: SSM ``step`` vs a transformer.

Mamba and Mamba-2 carry a fixed-size state, so a step should cost the same at t=1000 as at t=10.
Next to them, the transformer that re-encodes its whole context for every new token (window
evaluation, O(t) per token with O(t²) attention) and, for reference, its KV-cache ``step``.
States at t=10 and t=1000 come from stepping through one random sequence; the timed calls then
alternate between the two, so a busy machine slows both alike. Medians over ``--reps`` calls,
one CPU thread, batch 1 (one environment), d_model=128, 3 layers, ``no_grad``, eval mode.

    python benchmarks/step_latency.py
    python benchmarks/step_latency.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse

import torch
from timing import median_ms

from lit_seqrl.registry import build_backbone

SHORT, LONG = 10, 1000


def states_at(backbone, x: torch.Tensor, ts: tuple[int, ...]) -> dict[int, object]:
    """The backbone's state after each of the first ``t`` tokens of ``x (B, L, D)``, for t in ``ts``."""
    state, saved = backbone.init_state(x.shape[0], dtype=x.dtype), {}
    for t in range(max(ts)):
        _, state = backbone.step(x[:, t], state)
        if t + 1 in ts:
            saved[t + 1] = state
    return saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=None, help="timed calls per setting (default 50, quick 15)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reps = args.reps or (15 if args.quick else 50)
    size = {"d_model": args.d_model, "n_layers": args.n_layers}
    x = torch.randn(args.batch, LONG + 1, args.d_model)

    rows: list[tuple[str, str, float, float]] = []
    with torch.no_grad():
        for name in ("mamba", "mamba2"):
            backbone = build_backbone(name, **size).eval()
            states = states_at(backbone, x, (SHORT, LONG))

            def step(t: int, backbone=backbone, states=states):
                return lambda: backbone.step(x[:, t], states[t])

            short, long = median_ms([step(SHORT), step(LONG)], reps)
            rows.append((name, "step (recurrent)", short, long))

        transformer = build_backbone("transformer", **size, n_heads=1, max_seq_len=LONG + 1).eval()
        short, long = median_ms(
            [lambda: transformer(x[:, : SHORT + 1]), lambda: transformer(x[:, : LONG + 1])], max(3, reps // 5)
        )
        rows.append(("transformer", "re-encode context", short, long))
        states = states_at(
            transformer, x, (SHORT, LONG)
        )  # the KV step writes its cache in place: harmless here
        short, long = median_ms(
            [
                lambda: transformer.step(x[:, SHORT], states[SHORT]),
                lambda: transformer.step(x[:, LONG], states[LONG]),
            ],
            reps,
        )
        rows.append(("transformer", "step (KV cache)", short, long))

    print(
        f"per-token latency, d_model={args.d_model}, {args.n_layers} layers, batch={args.batch}, "
        f"CPU threads={torch.get_num_threads()}, median of {reps} calls (re-encoding: {max(3, reps // 5)})"
    )
    header = f"{'backbone':<13}{'mode':<20}{'t=10 ms':>9}{'t=1000 ms':>11}{'t1000/t10':>11}"
    print(header)
    print("-" * len(header))
    for name, mode, short, long in rows:
        print(f"{name:<13}{mode:<20}{short:>9.3f}{long:>11.3f}{long / short:>10.2f}x")
    ratios = {name: long / short for name, mode, short, long in rows if mode.startswith("step (rec")}
    print(f"step_latency_ratio_mamba2: {ratios['mamba2']:.2f} x")
    print(f"RESULT step_latency_ratio_mamba: {ratios['mamba']:.2f} x (goal <= 1.2)")


if __name__ == "__main__":
    main()
