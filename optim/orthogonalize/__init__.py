"""The whole-matrix transform layer, shared by every orthogonalized optimizer.

    newton_schulz   the kernel: quintic Newton-Schulz (and exact SVD), batched, FLOP count
    spectral_power  U S^p V^T through the BeyondMuon coupled Newton iteration (and exact SVD)
    local           the ``MatrixTransform`` and ``Orthogonalizer`` protocols, the single-process orthogonalizer
    exchange        under FSDP2: each matrix transformed once on an owner rank (or replicated)
    from_mesh       ``MatrixDistribution`` (orthogonalizer + row-spanning reductions) from a device mesh
"""
