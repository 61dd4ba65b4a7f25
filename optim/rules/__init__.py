"""Update rules of the orthogonalized optimizers: one file per optimizer (or family), equations first.

    base      the two-phase contract (before / after the whole-matrix transform), shared pieces
    muon      Muon          namo      NAMO           namo_d   NAMO-D
    adago     AdaGO         normuon   NorMuon
    spectral  spectral_msgd, spectral_adam (U S^p V^T of momentum / of Adam's update)
    auon      AuON (default, hybrid, paper2025)
    root      ROOT (quantile-clipped momentum, then Newton-Schulz)
    rownorm   RowNormM (row-normalized momentum; also the embedding group's rule)
    aro       ARO-Sinkhorn (rotated steepest descent; its transform: optim/orthogonalize/rotated.py)
    fismo     FISMO (Kronecker-factored Fisher whitening around Muon's polar factor; owner-resident P, Q, M)
    schatten  adaptive Schatten-p (U S^(1/p) V^T, p per layer from gradient and activation spectra)
"""
