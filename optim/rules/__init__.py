"""Update rules of the orthogonalized optimizers: one file per optimizer, equations first.

    base     the two-phase contract (before / after orthogonalization), shared hyper-parameters
    muon     Muon          namo     NAMO           namo_d   NAMO-D
    adago    AdaGO         normuon  NorMuon
"""
