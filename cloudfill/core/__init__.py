"""What training, inference and fill share, below all three of them.

- :mod:`~cloudfill.core.pairs`: the pairing rule (:class:`~cloudfill.core.pairs.PairingRule`)
  and which S1 and reference dates serve each S2 date;
- :mod:`~cloudfill.core.condition`: the generator's input stack, built alike for a training
  patch and an inference block, from :mod:`~cloudfill.core.reference` (date, composite and
  blend references), :mod:`~cloudfill.core.season` (time of year), :mod:`~cloudfill.core.height`
  (the date's clear pixels by elevation band) and :mod:`~cloudfill.core.illumination` (the
  slopes' sunlight);
- :mod:`~cloudfill.core.variants`: the model variants' channel order and configuration names
  (no torch);
- :mod:`~cloudfill.core.grid`: the patch grid, its alignment and the spatial train/val/test
  split that evaluation reuses;
- :mod:`~cloudfill.core.temporal`: per-pixel persistence and linear interpolation (the fill's
  fallback and the evaluation's baselines).

Nothing here imports torch; every function takes and returns xarray, pandas or NumPy values.
"""
