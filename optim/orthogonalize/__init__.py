"""The whole-matrix transform layer, shared by every orthogonalized optimizer.

    transform           the ``MatrixTransform`` contract (call, FLOPs, the row-shard ability) and ``RowShards``
    newton_schulz       the kernel: the quintic (per-step coefficients; a row-sharded form), exact SVD, FLOPs;
                        ``NewtonSchulz``, the transform every Muon-family rule is handed
    coefficients        coefficient schedules: Jordan's fixed quintic, Polar Express
    gram_newton_schulz  the same polynomial iterated on the small Gram matrix, applied once
    spectral_power      U S^p V^T through the BeyondMuon coupled Newton iteration (and exact SVD)
    schatten_power      U S^(1/p) V^T by the quintic with per-step least-squares coefficients (Schatten-p)
    rotated             ARO's transform: R f(R^T M) with the rotation from a QR, SR-Sinkhorn (stateful)
    owner_state         whole-matrix state a transform keeps (ARO's rotation): held on the matrix's owner,
                        row-sharded only in checkpoints
    split               split-QKV / per-head transforms of c_attn (``SplitRows`` wraps any transform)
    config              ``OrthogonalizeConfig`` (optim.orthogonalize) and the Newton-Schulz it configures
    orthogonalizer      the ``Orthogonalizer`` protocol, ``LocalOrthogonalizer`` (one process)
    exchange            under FSDP2: each matrix transformed once, on an owner rank (bucketed, overlapped),
                        on its row shards, or replicated
    row_shards          the quintic on the shards FSDP2 holds (Gram sums; wide matrices re-sharded by columns)
    cost_model          owners or row shards per matrix: a stated model of FLOPs, bytes and latency
    from_mesh           ``MatrixDistribution`` (orthogonalizer + row-spanning reductions) from a device mesh

Nothing here imports optim.rules or optim.config: the rules hand their transform in (optim.build).
"""
