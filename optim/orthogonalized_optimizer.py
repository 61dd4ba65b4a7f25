"""``OrthogonalizedOptimizer``: one ``torch.optim.Optimizer`` for every Muon-family rule.

Takes the routed groups of ``optim.build.param_groups`` (keys params, param_names, role, lr,
weight_decay). Role "matrix" takes the ``MatrixRule``; roles "embedding" and "vector" take AdamW
(torch's functional AdamW, foreach / fused) with the group's lr and weight decay, unless the role has a
role rule (``role_rules``, optim/role_rules.py: RowNormM on the embeddings).

step():
    1. rule.before_orthogonalize on every matrix        -> transform inputs U (local row blocks), carries
    2. orthogonalizer.orthogonalize_all(U blocks, full shapes)   (all matrices at once; the rule's
       whole-matrix transform: Newton-Schulz, a spectral power; skipped for rules without one, AuON)
    3. rule.after_orthogonalize on every matrix          -> scaling, weight decay, update, stats
    4. role rules: both phases per parameter (no transform; row-spanning statistics via reduce_sum)
    5. AdamW on the other groups

Distribution (``MatrixDistribution`` of optim.orthogonalize.from_mesh; default: one process):
    orthogonalizer  see optim.orthogonalize.orthogonalizer (protocol ``orthogonalize_all``)
    reduce_sum      sum over the row shards of a matrix (see optim.rules.base); identity here
    reduce_max      max over the same group, used only by ``diagnostics()``
Parameters may be FSDP2 DTensors sharded on dim 0: the rules see ``p.to_local()`` and
``grad.to_local()`` with the full shape ``p.shape``; param-shaped state is created with
``zeros_like(p)`` so it is sharded like ``p``; per-column and scalar state are plain tensors.

State is created eagerly in __init__; every entry (``step`` included) is a tensor, so
``state_dict`` / ``load_state_dict`` round-trip exactly and torch.distributed.checkpoint can save it.
A transform's whole-matrix state (ARO's rotation: optim.orthogonalize.owner_state) is not in
``self.state``: ``owner_state`` holds it on each matrix's owner rank; ``state_dict`` adds it to the
parameter's entry row-sharded like the parameter and ``load_state_dict`` gathers it back (collectives).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from optim.adamw import AdamWHParams, adamw_direction, adamw_step_
from optim.dtensor import local
from optim.orthogonalize.from_mesh import MatrixDistribution
from optim.orthogonalize.owner_state import OwnerStateStore
from optim.role_rules import RoleRules
from optim.routing import RoutingError, RoutingTable
from optim.rules.base import MatrixContext, MatrixRule, MatrixStats

ADAMW_ROLES = ("embedding", "vector")


class OrthogonalizedOptimizer(torch.optim.Optimizer):
    def __init__(
        self,
        param_groups: list[dict[str, Any]],
        rule: MatrixRule,
        *,
        adamw: AdamWHParams | None = None,
        distribution: MatrixDistribution | None = None,
        routing: RoutingTable | None = None,
        role_rules: dict[str, RoleRules] | None = None,
    ):
        """``adamw``: betas and eps for the embedding / vector groups (needed only if there are any);
        ``distribution``: how matrices reach their other row shards (default: one process);
        ``routing``: the model's routing table; with it, a matrix-group parameter the table routes
        elsewhere is an error (without it, hand-built groups get the shape check only);
        ``role_rules``: role -> the rules that step that role's group instead of AdamW (its head
        parameters, the group's ``head_names``, take ``head_rule``)."""
        super().__init__(param_groups, defaults={})
        self.rule = rule
        self.role_rules = dict(role_rules or {})
        # kept here, not read from the groups at step time: load_state_dict replaces the group dicts
        self.head_names = {n for g in self.param_groups for n in g.get("head_names", ())}
        if any(r.rule.uses_transform or r.head_rule.uses_transform for r in self.role_rules.values()):
            raise ValueError("a role rule runs without the whole-matrix transform (uses_transform must be False)")
        if adamw is None and any(g.get("role") in ADAMW_ROLES and g.get("role") not in self.role_rules
                                 for g in self.param_groups):
            raise ValueError("OrthogonalizedOptimizer: embedding/vector groups need adamw=AdamWHParams(betas, eps, impl)")
        self.adamw_betas = tuple(adamw.betas) if adamw else None
        self.adamw_eps = float(adamw.eps) if adamw else None
        self.adamw_impl = adamw.impl if adamw else None
        if distribution is None and rule.uses_transform and type(rule).transform is not MatrixRule.transform:
            raise ValueError(
                f"'{rule.name}' has its own whole-matrix transform: pass distribution=MatrixDistribution("
                f"LocalOrthogonalizer(transform=optim.build.matrix_transform(rule, orthogonalize_config, device))) "
                f"or use build_optimizer"
            )
        distribution = distribution or MatrixDistribution()
        self.orthogonalizer = distribution.orthogonalizer
        self.reduce_sum = distribution.reduce_sum
        self.reduce_max = distribution.reduce_max
        self._check_groups(routing)
        self._init_state()
        matrices = [p for g in self.param_groups if g["role"] == "matrix" for p in g["params"]]
        self.owner_state = OwnerStateStore(matrices if rule.uses_transform else [], self.orthogonalizer)
        clash = {n for e in self.owner_state.entries for n in e} & {k for p in matrices for k in self.state[p]}
        if clash:
            raise ValueError(f"owner-resident state entries {sorted(clash)} clash with '{rule.name}''s own state keys")
        self._last_stats: list[tuple[int, MatrixStats]] = []  # (group index, stats)
        self._last_role_stats: list[tuple[int, MatrixStats]] = []
        self._last_lr: dict[int, float] = {}

    # ---- construction -------------------------------------------------------------------------
    def _check_groups(self, routing: RoutingTable | None) -> None:
        for group in self.param_groups:
            role = group.get("role")
            if role not in ("matrix", *ADAMW_ROLES):
                raise ValueError(f"param group role must be matrix, embedding or vector; got {role!r}")
            names = group.get("param_names") or [f"<unnamed {i}>" for i in range(len(group["params"]))]
            group["param_names"] = list(names)
            if role in self.role_rules:
                for name, p in zip(names, group["params"]):
                    if p.ndim != 2:
                        raise RoutingError(f"parameter '{name}' (shape {tuple(p.shape)}) is in the {role} group, "
                                           f"whose rule takes 2-D parameters only")
            if role != "matrix":
                continue
            for name, p in zip(names, group["params"]):
                if p.ndim != 2:
                    raise RoutingError(
                        f"parameter '{name}' (shape {tuple(p.shape)}) is in the matrix group of "
                        f"'{self.rule.name}', which only takes 2-D hidden matrices; route it to AdamW"
                    )
                if routing is None:
                    continue
                table_role = routing.role_of(name)
                if table_role == "embedding" and group.get("embeddings"):
                    continue  # optim.routing=ndim: the authors' routing, asked for
                if table_role != "matrix":
                    raise RoutingError(
                        f"parameter '{name}' has role '{table_role}' but is in the matrix group of "
                        f"'{self.rule.name}'; only hidden matrices take it (see optim.routing)"
                    )

    def _init_state(self) -> None:
        for group in self.param_groups:
            for name, p in zip(group["param_names"], group["params"]):
                state = self.state[p]
                if state:
                    continue
                state["step"] = torch.tensor(0.0, dtype=torch.float32)  # CPU, like torch's AdamW
                if group["role"] == "matrix":
                    state.update(self.rule.init_state(p))
                elif group["role"] in self.role_rules:
                    state.update(self.role_rules[group["role"]].of(name, self.head_names).init_state(p))
                else:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # ---- step ---------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step_matrices()
        self._step_role_rules()
        self._step_adamw()
        return loss

    def _context(self, p: torch.Tensor, group: dict[str, Any]) -> MatrixContext:
        """Counts the step of ``p`` and returns its context."""
        state = self.state[p]
        state["step"] += 1
        return MatrixContext(full_shape=(p.shape[0], p.shape[1]), lr=float(group["lr"]),
                             weight_decay=float(group["weight_decay"]), step=int(state["step"].item()),
                             reduce_sum=self.reduce_sum)

    def _step_matrices(self) -> None:
        work = []  # (group index, local param, local state, carry, ctx)
        blocks, shapes, params = [], [], []
        for gi, group in enumerate(self.param_groups):
            if group["role"] != "matrix":
                continue
            self._last_lr[gi] = float(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                ctx = self._context(p, group)
                local_state = {k: local(v) for k, v in self.state[p].items() if k != "step"}
                ns_input, carry = self.rule.before_orthogonalize(local_state, local(p.grad), ctx)
                blocks.append(ns_input)
                shapes.append(ctx.full_shape)
                params.append(p)
                work.append((gi, local(p), local_state, carry, ctx))
        if not work:
            return
        if not self.rule.uses_transform:
            orthos = blocks
        elif self.owner_state.stateful:
            orthos = self.orthogonalizer.orthogonalize_all(blocks, shapes, states=self.owner_state.for_step(params))
        else:
            orthos = self.orthogonalizer.orthogonalize_all(blocks, shapes)
        self._last_stats = [
            (gi, self.rule.after_orthogonalize(state, param, ortho, carry, ctx))
            for (gi, param, state, carry, ctx), ortho in zip(work, orthos)
        ]

    def _step_role_rules(self) -> None:
        """Both phases of the role's rule on each parameter of its group, one after the other (every
        rank walks the same parameters in the same order: the rule's reductions are collectives)."""
        stats = []
        for gi, group in enumerate(self.param_groups):
            rules = self.role_rules.get(group["role"])
            if rules is None:
                continue
            self._last_lr[gi] = float(group["lr"])
            for name, p in zip(group["param_names"], group["params"]):
                if p.grad is None:
                    continue
                rule, ctx = rules.of(name, self.head_names), self._context(p, group)
                local_state = {k: local(v) for k, v in self.state[p].items() if k != "step"}
                direction, carry = rule.before_orthogonalize(local_state, local(p.grad), ctx)
                stats.append((gi, rule.after_orthogonalize(local_state, local(p), direction, carry, ctx)))
        self._last_role_stats = stats

    def _step_adamw(self) -> None:
        if self.adamw_betas is None:  # matrix groups only
            return
        beta1, beta2 = self.adamw_betas
        for gi, group in enumerate(self.param_groups):
            if group["role"] == "matrix" or group["role"] in self.role_rules:
                continue
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            self._last_lr[gi] = float(group["lr"])
            adamw_step_(self.adamw_impl, params, [p.grad for p in params], [self.state[p] for p in params],
                        beta1=beta1, beta2=beta2, lr=float(group["lr"]), weight_decay=float(group["weight_decay"]),
                        eps=self.adamw_eps)

    # ---- checkpoints: the owner-resident state travels row-sharded ---------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's, plus each matrix's owner-resident entries, row-sharded (a collective when there are any)."""
        sd = super().state_dict()
        if self.owner_state.stateful:
            position = {id(p): n for n, p in enumerate(p for g in self.param_groups for p in g["params"])}
            for i, entries in self.owner_state.row_sharded().items():
                key = position[id(self.owner_state.params[i])]
                sd["state"][key] = {**sd["state"][key], **entries}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's, after taking out the owner-resident entries, which are then gathered to their holders
        (a collective when there are any). Keys may be indices or names (DCP's get/set_state_dict)."""
        if not self.owner_state.stateful:
            return super().load_state_dict(state_dict)
        state = {k: dict(v) for k, v in state_dict["state"].items()}
        saved = [key for g in state_dict["param_groups"] for key in g["params"]]
        position = {id(p): n for n, p in enumerate(p for g in self.param_groups for p in g["params"])}
        values = {}
        for i, (p, entries) in enumerate(zip(self.owner_state.params, self.owner_state.entries)):
            own = state.get(saved[position[id(p)]], {}) if position[id(p)] < len(saved) else {}
            values[i] = {name: own.pop(name) for name in entries if name in own}
        super().load_state_dict({**state_dict, "state": state})
        self.owner_state.load_row_sharded(values)

    # ---- diagnostics --------------------------------------------------------------------------
    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """Figures of the last step: update RMS per group role + the rule's own (cheap).

        A collective under FSDP2 (one reduce_sum, and reduce_max for NorMuon): call on every rank.
        The update RMS excludes weight decay; for AdamW groups it is recomputed from the moments.
        """
        sq: dict[int, torch.Tensor] = {}
        for gi, stats in [*self._last_stats, *self._last_role_stats]:
            sq[gi] = sq.get(gi, 0.0) + stats.update_sq.float()
        for gi, group in enumerate(self.param_groups):
            if group["role"] == "matrix" or group["role"] in self.role_rules or gi not in self._last_lr:
                continue
            beta1, beta2 = self.adamw_betas  # an AdamW group exists, so adamw was given
            total = torch.zeros((), dtype=torch.float32)
            for p in group["params"]:
                s = self.state[p]
                t = float(s["step"])
                if t == 0:
                    continue
                direction = adamw_direction(self.adamw_impl, local(s["exp_avg"]).float(),
                                            local(s["exp_avg_sq"]).float(), t, beta1, beta2, self.adamw_eps)
                total = total + direction.square().sum().cpu() * self._last_lr[gi] ** 2
            sq[gi] = total
        out: dict[str, float] = {}
        if sq:
            order = sorted(sq)
            device = local(self.param_groups[0]["params"][0]).device
            reduced = self.reduce_sum(torch.stack([torch.as_tensor(sq[g]).float().to(device) for g in order]))
            for g, value in zip(order, reduced.tolist()):
                group = self.param_groups[g]
                numel = sum(p.numel() for p in group["params"])
                out[f"update_rms/{group['role']}"] = math.sqrt(value / max(numel, 1))
        out.update(self.rule.summarize([s for _, s in self._last_stats], self.reduce_max))
        return out
