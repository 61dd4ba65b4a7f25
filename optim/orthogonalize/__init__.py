"""The whole-matrix transform layer, shared by every orthogonalized optimizer.

    newton_schulz  the kernel: quintic Newton-Schulz (and exact SVD), batched, FLOP count
    local          the ``Orthogonalizer`` protocol and the single-process orthogonalizer
    exchange       under FSDP2: each matrix orthogonalized once on an owner rank (or replicated)
    from_mesh      ``MatrixDistribution`` (orthogonalizer + row-spanning reductions) from a device mesh
"""
