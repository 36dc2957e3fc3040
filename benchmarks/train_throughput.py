"""Training throughput of the default DT config and the share of a step spent loading data.

Measured side by side in one run: (1) fetching batches from the data module's DataLoader alone,
(2) forward + backward + AdamW on batches already in memory, (3) the full Lightning loop
(``Trainer.fit``) for the same number of steps.

    python benchmarks/train_throughput.py [--steps 60] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from timing import train_step

from lit_seqrl.agents import DecisionAgent
from lit_seqrl.data import OfflineTrajectoryDataModule


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dm = OfflineTrajectoryDataModule(
        "lit_seqrl/pendulum/mixed-v0", reward_scale=0.01, batch_size=64, context_len=20
    )
    dm.prepare_data()
    dm.setup("fit")
    agent = DecisionAgent(eval_episodes=0, data_spec=dm.data_spec())

    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    batches = [b for _, b in zip(range(args.steps), loader)]
    t_data = (time.perf_counter() - t0) / len(batches)

    opt = agent.configure_optimizers()["optimizer"]
    agent.train()
    for b in batches[:5]:  # warm-up
        agent._loss(b)[0].backward()
        opt.zero_grad()
    t0 = time.perf_counter()
    for b in batches:
        train_step(agent, opt, b)
    t_step = (time.perf_counter() - t0) / len(batches)

    fresh = DecisionAgent(eval_episodes=0, data_spec=dm.data_spec())
    trainer = L.Trainer(max_steps=args.steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=0.25)  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(fresh, dm)
    t_fit = (time.perf_counter() - t0) / args.steps

    bs = dm.hparams.batch_size
    print(f"{'part':<40} {'ms/step':>8} {'windows/s':>10}")
    print(f"{'data loading (DataLoader, batch 64)':<40} {1e3 * t_data:8.2f} {bs / t_data:10.0f}")
    print(f"{'model step (fwd+bwd+AdamW)':<40} {1e3 * t_step:8.2f} {bs / t_step:10.0f}")
    print(f"{'Lightning fit loop (all included)':<40} {1e3 * t_fit:8.2f} {bs / t_fit:10.0f}")
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"RESULT data_loading_share: {100 * t_data / (t_data + t_step):.1f} % (goal <= 5)")


if __name__ == "__main__":
    main()
