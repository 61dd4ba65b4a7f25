"""Adaptive Schatten-p beside own Muon on a CPU model: whole training steps, the estimation's share.

    python -m scripts.benchmarks.schatten_estimation                       # the CPU study model (4 x 256)
    python -m scripts.benchmarks.schatten_estimation --model gpt2-mini --rounds 6

Arms, interleaved round by round (one training step each: forward, backward, optimizer step; same
random batches): Muon (its YAML, fp32 NS), Schatten-p with the YAML's K = 100 (its timed steps do not
measure: step 1 is the untimed warm-up), and Schatten-p with K = 1 (every step captures the inputs'
Grams in the forward, forms GᵀG, two eigen-decompositions per matrix and the criterion). The
estimation overhead at period K is (t_K1 - t_K100) / K per step, relative to t_K100. Minima and medians
of the rounds (other processes share the CPU). State bytes per matrix parameter from the optimizers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import time

import torch

from models.gpt2 import GPT
from models.model_config import load_model_config
from optim import build_optimizer
from optim.config import load_optim_config

STUDY_MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 128}  # configs/study/cpu_family.yaml


def arm(name: str, overrides: list[str], model_config, seed: int = 0):
    torch.manual_seed(seed)
    model = GPT(model_config)
    config = load_optim_config(name, ["optim.orthogonalize.compute_dtype=float32", *overrides])
    return model, build_optimizer(model, config)


def matrix_state_bytes(opt) -> float:
    group = next(g for g in opt.param_groups if g["role"] == "matrix")
    numel = sum(p.numel() for p in group["params"])
    total = sum(v.numel() * v.element_size() for p in group["params"] for k, v in opt.state[p].items() if k != "step")
    return total / numel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="study", help="study (4 x 256, context 128) or a configs/model name")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if args.model == "study":
        model_config = dataclasses.replace(load_model_config("gpt2-mini"), name="gpt2-study-4x256", **STUDY_MODEL)
    else:
        model_config = load_model_config(args.model)
    arms = {"muon": arm("muon", [], model_config),
            "schatten_k100": arm("schatten", [], model_config),
            "schatten_k1": arm("schatten", ["optim.matrix.recompute_every=1"], model_config)}
    gen = torch.Generator().manual_seed(0)
    T = model_config.block_size
    batches = [torch.randint(0, model_config.vocab_size, (args.batch, T + 1), generator=gen) for _ in range(args.rounds + 1)]
    times: dict[str, list[float]] = {name: [] for name in arms}
    opt_times: dict[str, list[float]] = {name: [] for name in arms}
    for round_, batch in enumerate(batches):  # round 0: warm-up (and Schatten's first measurement)
        for name, (model, opt) in arms.items():
            t0 = time.perf_counter()
            _, loss = model(batch[:, :-1], batch[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            if round_:
                times[name].append(t2 - t0)
                opt_times[name].append(t2 - t1)
    print(f"# schatten_estimation --model {args.model} ({model_config.n_layer} x {model_config.n_embd}, context {T}, "
          f"batch {args.batch}): {args.rounds} rounds, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    base = min(times["muon"])
    print("\n| arm | train step min (ms) | median (ms) | optimizer step min (ms) | vs own Muon (min) | matrix state B/param |")
    print("|---|---|---|---|---|---|")
    for name, (_, opt) in arms.items():
        t = sorted(times[name])
        print(f"| {name} | {t[0] * 1e3:.1f} | {t[len(t) // 2] * 1e3:.1f} | {min(opt_times[name]) * 1e3:.1f} | "
              f"{t[0] / base:.3f}x | {matrix_state_bytes(opt):.5f} |")
    plain, measured = min(times["schatten_k100"]), min(times["schatten_k1"])
    for k in (1, 10, 100):
        print(f"estimation overhead at recompute_every={k}: {(measured - plain) / k / plain:.1%} of a step")
    ps = [float(arms["schatten_k1"][1].state[p]["schatten_p"]) for g in arms["schatten_k1"][1].param_groups
          if g["role"] == "matrix" for p in g["params"]]
    print(f"selected p (K = 1, last step): {ps}")


if __name__ == "__main__":
    main()
