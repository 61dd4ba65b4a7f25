"""The training loop: build everything from the validated config, train, evaluate, checkpoint.

Global batch = micro_batch_size x grad_accum_steps x world_size sequences of seq_len tokens. The loss
of each micro-batch is summed over its tokens and divided by the tokens of the whole global step, so
the gradient is that of the mean loss over the global batch however it is split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

import optim
from data.loader import TokenLoader
from data.prepare import prepare_dataset
from models.gpt2 import GPT, flops_per_token
from optim.dtensor import full, local
from trainer import checkpoint as ckpt
from trainer.config import TrainConfig, resolved_yaml
from trainer.banner import describe_run
from trainer.distributed import DistContext
from trainer.init_from import load_weights, plan_start
from trainer.metrics import METRICS_FILE, MetricsLogger
from trainer.mfu import mfu_denominator
from trainer.parallelize import prepare_model
from trainer.preemption import StopRequest, stop_file_for
from trainer.progress import Console
from trainer.resume import ResumeDecision, remaining_steps, resolve_resume
from trainer.run_dir import write_run_files
from trainer.sampling import sample_texts
from trainer.schedule import apply_lr


class Trainer:
    def __init__(self, cfg: TrainConfig, ctx: DistContext, run_dir: Path, overrides: list[str] = ()) -> None:
        if not isinstance(cfg, TrainConfig):
            raise TypeError("Trainer takes the TrainConfig of trainer.config.build_config(cfg, world_size)")
        if cfg.batch.world_size != ctx.world_size:
            raise ValueError(f"config was built for {cfg.batch.world_size} rank(s), the launch has {ctx.world_size}")
        self.cfg, self.ctx, self.run_dir, self.overrides = cfg, ctx, Path(run_dir), list(overrides)
        t = cfg.trainer
        self.micro_batch, self.grad_accum = cfg.batch.micro_batch_size, cfg.batch.grad_accum_steps
        self.seq_len = t.seq_len
        self.tokens_per_step = cfg.batch.tokens_per_step
        self.device = ctx.device
        torch.manual_seed(cfg.seed)

        self.model_cfg = cfg.model
        # Every rank builds the same seeded model; FSDP2 then keeps each rank's row shard.
        self.model, self.forward = prepare_model(GPT(cfg.model), cfg, ctx.mesh, self.device)
        self.optimizer = optim.build_optimizer(self.model, cfg.optim, ctx.mesh)
        for group in self.optimizer.param_groups:  # the schedule scales these; set before any resume
            group["initial_lr"] = group["lr"]
        self.schedule = cfg.schedule
        autocast_dtype = t.compute_dtype  # resolved by build_config
        self.autocast = (
            torch.autocast(self.device.type, dtype=autocast_dtype) if autocast_dtype != torch.float32 else nullcontext()
        )

        prepared = prepare_dataset(cfg.data)
        self.prepared = prepared
        self.train_loader = TokenLoader(
            prepared.train, seq_len=self.seq_len, micro_batch_size=self.micro_batch, rank=ctx.rank,
            world_size=ctx.world_size, seed=cfg.seed, vocab_size=cfg.model.vocab_size,
        )
        self.ckpt_root = self.run_dir / "checkpoints"
        self.step = 0
        self.skipped_steps = 0
        self.optimizer_steps = 0
        self.flops_per_token = flops_per_token(cfg.model, self.seq_len)
        self.peak_tflops, self.peak_source = mfu_denominator(t.peak_tflops, self.device, autocast_dtype)

    # ----------------------------------------------------------------------------------- state
    def trainer_state(self) -> dict[str, Any]:
        schedule = {k: v for k, v in dataclasses.asdict(self.schedule).items() if k != "max_steps"}
        return {
            "tokens": self.step * self.tokens_per_step,
            "loader": self.train_loader.state_dict(),
            "schedule": schedule,
            "model": self.cfg.model_dict,
            "optim": self.cfg.optim.name,
            "skipped_steps": self.skipped_steps,
            "optimizer_steps": self.optimizer_steps,
            "global_batch_sequences": self.cfg.batch.global_sequences,
        }

    def resume_from(self, decision: ResumeDecision, log) -> None:
        """Load the checkpoint ``decision`` (``trainer.resume.resolve_resume``) names; nothing when fresh."""
        if decision.checkpoint is None:
            return
        state = ckpt.load_checkpoint(decision.checkpoint, self.model, self.optimizer, self.ctx)
        self.train_loader.load_state_dict(state["loader"])
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.optimizer_steps = int(state.get("optimizer_steps", self.step - self.skipped_steps))
        log(f"resumed from {decision.path} at step {self.step}")

    def load_initial_weights(self, resume: ResumeDecision, log) -> str:
        """Load trainer.init_from's weights when there is no checkpoint to resume (for eval_only, the
        resumed checkpoint's weights alone); returns the banner's start line."""
        source, start = plan_start(self.cfg, resume, deep=self.cfg.trainer.verify_tensors_on_resume, log=log)
        if source is not None:
            load_weights(source, self.model)
        return start

    def evaluate_only(self, start: str, log) -> dict[str, Any]:
        """trainer.eval_only: the val loss of the loaded weights, printed; nothing is written."""
        log(f"eval only: {start}")
        val_loss = self.evaluate()
        tokens = self.cfg.trainer.eval_batches * self.tokens_per_step
        log(f"val_loss {val_loss:.4f} ({self.cfg.trainer.eval_batches} batches, {tokens:,} tokens of the val split)")
        return {"step": self.step, "val_loss": val_loss, "eval_only": True}

    def save(self) -> Path:
        return ckpt.save_checkpoint(
            self.ckpt_root, self.step, self.model, self.optimizer, self.trainer_state(), self.ctx,
            keep=int(self.cfg.trainer.keep_checkpoints),
        )

    # ------------------------------------------------------------------------------------ steps
    def train_step(self) -> tuple[float, float, bool]:
        """One optimizer step over the global batch. Returns (loss, grad_norm, stepped)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        sync_each = self.cfg.distributed.grad_sync == "every_microbatch"
        for micro_step in range(self.grad_accum):
            if self.ctx.distributed:  # FSDP2: reduce-scatter gradients on the last micro-batch only
                self.model.set_requires_gradient_sync(sync_each or micro_step == self.grad_accum - 1)
            x, y = self.train_loader.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self.autocast:
                _, loss = self.forward(x, y, reduction="sum")
            (loss / self.tokens_per_step).backward()
            loss_sum += loss.detach()
        loss_value = self.ctx.all_reduce_sum(loss_sum).item() / self.tokens_per_step
        clip = float(self.cfg.trainer.grad_clip)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip > 0 else math.inf, foreach=True
        )
        grad_norm = float(full(grad_norm))
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            if self.cfg.trainer.on_nonfinite == "stop":
                raise FloatingPointError(
                    f"non-finite loss ({loss_value}) or grad norm ({grad_norm}) at step {self.step + 1}; "
                    f"the last checkpoint is intact. Set trainer.on_nonfinite=skip to skip such steps"
                )
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, grad_norm, False
        apply_lr(self.optimizer, self.schedule, self.step)
        self.optimizer.step()
        self.optimizer_steps += 1
        return loss_value, grad_norm, True

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        loader = TokenLoader(
            self.prepared.val, seq_len=self.seq_len, micro_batch_size=self.micro_batch, rank=self.ctx.rank,
            world_size=self.ctx.world_size, seed=0, shuffle=False, vocab_size=self.model_cfg.vocab_size,
        )
        total = torch.zeros(2, device=self.device)
        # eval_batches global batches: the same first windows of the val split however the batch is
        # split over ranks and micro-batches, so val loss is comparable across world sizes
        for _ in range(int(self.cfg.trainer.eval_batches) * self.grad_accum):
            x, y = loader.next_batch()
            with self.autocast:
                _, loss = self.forward(x.to(self.device), y.to(self.device), reduction="sum")
            total += torch.stack([loss.float(), torch.tensor(float(y.numel()), device=self.device)])
        self.ctx.all_reduce_sum(total)
        return (total[0] / total[1]).item()

    def _params_finite(self) -> bool:
        finite = torch.tensor(
            float(all(torch.isfinite(local(p)).all() for p in self.model.parameters())), device=self.device
        )
        return self.ctx.all_reduce_sum(finite).item() == self.ctx.world_size

    def checkpoint(self, log) -> None:
        if not self._params_finite():  # never write a checkpoint holding NaN/Inf
            log(f"step {self.step}: parameters are not finite; checkpoint skipped")
            return
        path = self.save()
        log(f"saved checkpoint {path}")

    # ------------------------------------------------------------------------------------- run
    def fit(self) -> dict[str, Any]:
        t, ctx = self.cfg.trainer, self.ctx
        console = Console(enabled=ctx.is_main)  # stdout, and train.log once the run directory is written
        # Everything that can refuse this start runs before the run directory is touched; with
        # trainer.verify_tensors_on_resume the tensor files' CRCs too (a same-size corruption loads silently).
        resume = resolve_resume(self.cfg, self.run_dir, deep=t.verify_tensors_on_resume, ctx=ctx, log=console)
        start = self.load_initial_weights(resume, console)
        if t.eval_only:
            return self.evaluate_only(start, console)
        remaining_steps(resume, self.cfg)  # model weights only, another optimizer, past max_steps: refused
        if ctx.is_main:
            write_run_files(self.run_dir, resolved_yaml(self.cfg), self.overrides)
        console.open(self.run_dir)
        mfu = f"{self.peak_tflops:.3f} TFLOP/s per rank ({self.peak_source})" if self.peak_tflops else self.peak_source
        for line in describe_run(self.cfg, self.run_dir, start=start, mfu=mfu):
            console(line)
        logger = MetricsLogger(self.run_dir, self.cfg.logging, self.cfg.resolved, t.max_steps, 0, ctx.is_main,
                               console=console)
        self.resume_from(resume, logger.write)
        # rows past the resumed step (0 for a fresh start) came from a lost attempt: they will be redone
        logger.rewind(self.step)
        logger.start_at(self.step)
        stop = StopRequest(stop_file_for(self.run_dir)).install()  # preemption: signal or STOP file
        try:
            # val loss at initialization: every curve starts at the same point; at max_steps, a finished run
            # that lost its summary (killed after its last checkpoint) is evaluated again and summarized
            if self.step == 0 or self.step >= t.max_steps:
                self._log_eval(logger)
            stopped = self._train_until(t.max_steps, logger, stop)
        finally:
            logger.close()  # before uninstall: a handed-over handler (submitit's) may exit the process
            console.close()
            stop.uninstall()
        if stopped is not None:
            return {"step": self.step, "val_loss": None, "stopped": stopped}
        return self._finish()

    def _train_until(self, max_steps: int, logger: MetricsLogger, stop: StopRequest) -> str | None:
        """Train to max_steps; returns the stop reason if a stop request came first."""
        t, ctx = self.cfg.trainer, self.ctx
        log_every, eval_every, ckpt_every = t.log_every, t.eval_every, t.checkpoint_every
        window_start, window_tokens = time.perf_counter(), 0
        while self.step < max_steps:
            loss, grad_norm, stepped = self.train_step()
            self.step += 1
            window_tokens += self.tokens_per_step
            logger.advance()
            last = self.step == max_steps
            if self.step % log_every == 0 or last:
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / max(elapsed, 1e-9)
                row = {
                    "step": self.step, "tokens": self.step * self.tokens_per_step, "loss": loss,
                    "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                    "tokens_per_s": tokens_per_s, "skipped_steps": self.skipped_steps,
                }
                if self.peak_tflops:
                    row["mfu"] = self.flops_per_token * tokens_per_s / (self.peak_tflops * 1e12 * ctx.world_size)
                if self.device.type == "cuda":
                    row["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
                if hasattr(self.optimizer, "diagnostics"):
                    row.update(self.optimizer.diagnostics())
                logger.log(row)
                window_start, window_tokens = time.perf_counter(), 0
            if (eval_every > 0 and self.step % eval_every == 0) or last:
                self._log_eval(logger)
            if t.sample_every > 0 and self.step % t.sample_every == 0:
                self._log_sample(logger)
            saved = (ckpt_every > 0 and self.step % ckpt_every == 0) or last
            if saved:
                self.checkpoint(logger.write)
            reason = stop.poll(ctx)  # collective: every rank stops at the same step
            if reason is not None and not last:
                if not saved:
                    self.checkpoint(logger.write)
                logger.write(f"stopping at step {self.step}: {reason}")
                return reason
        return None

    def _log_eval(self, logger: MetricsLogger) -> None:
        self.val_loss = self.evaluate()
        logger.log({"step": self.step, "tokens": self.step * self.tokens_per_step, "val_loss": self.val_loss})
        logger.write(f"step {self.step}: val_loss {self.val_loss:.4f}")

    def _log_sample(self, logger: MetricsLogger) -> None:
        """trainer.sample_every: a text sample (every rank generates: FSDP2 gathers; rank 0 logs)."""
        t = self.cfg.trainer
        with self.autocast:
            text = sample_texts(self.model, t.sample_prompt, t.sample_tokens, seed=self.cfg.seed, device=self.device)[0]
        logger.write(f"step {self.step}: sample\n" + "\n".join(f"  | {line}" for line in text.splitlines()))
        logger.log_text(self.step, "sample", text)

    def _finish(self) -> dict[str, Any]:
        t, ctx = self.cfg.trainer, self.ctx
        summary = {"step": self.step, "val_loss": self.val_loss, "skipped_steps": self.skipped_steps,
                   "optimizer_steps": self.optimizer_steps, "mfu_peak_tflops": self.peak_tflops,
                   "mfu_peak_source": self.peak_source}
        if ctx.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            if t.plot and (self.run_dir / METRICS_FILE).exists():
                from trainer.loss_curve import plot_loss_curves  # matplotlib: only when a run plots

                plot_loss_curves([self.run_dir], self.run_dir / "loss_curve.png")
        return summary
