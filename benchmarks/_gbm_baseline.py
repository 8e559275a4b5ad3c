"""The per-pixel gradient-boosting baseline of issue 21, on whole scenes.

``probe_learning.py`` builds its samples for pixels with a clear value on both sides only; a
benchmark that scores a fill needs a prediction for every pixel the fill synthesizes. This
module uses the probe's inputs for every pixel of a date (``probe_learning.date_inputs``,
``features(..., "full")``: the blend reference, both sides' nearest clear values and ages, S1
at the target and at both sides' dates, the DEM), NaN where a side has no clear value within
the pairing rule's 120 days (HistGradientBoosting routes NaN itself), and fits one
HistGradientBoostingRegressor per band to the residual ``truth - blend``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from probe_learning import date_inputs, features

from cloudfill.cube.schema import BANDS


def _x(part: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    return features({f"p/{k}": v[rows] for k, v in part.items()}, "p", "full")


class PixelGBM:
    """Per-band HistGradientBoosting of ``truth - blend`` on the probe's full inputs."""

    def __init__(self, iters: int = 200, max_train: int = 100_000, seed: int = 0) -> None:
        self.iters, self.max_train, self.seed = iters, max_train, seed
        self.models: list = []
        self.n_train = 0

    def fit(self, scenes: list[xr.Dataset]) -> PixelGBM:
        """Fit on the cloudy pixels (with a blend reference) of ``scenes`` (with truth)."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        xs, rs = [], []
        for ds in scenes:
            for _, part in date_inputs(ds):
                rows = np.flatnonzero(part["cloudy"] & np.isfinite(part["blend"]).all(1))
                xs.append(_x(part, rows))
                rs.append(part["truth"][rows] - part["blend"][rows])
        x, r = np.concatenate(xs), np.concatenate(rs)
        if len(x) > self.max_train:
            keep = np.random.default_rng(self.seed).choice(len(x), self.max_train, replace=False)
            x, r = x[np.sort(keep)], r[np.sort(keep)]
        self.n_train = len(x)
        self.models = [
            HistGradientBoostingRegressor(
                max_iter=self.iters, early_stopping=False, random_state=self.seed
            ).fit(x, r[:, b])
            for b in range(r.shape[1])
        ]
        return self

    def predict(self, ds: xr.Dataset) -> np.ndarray:
        """(time, band, y, x) prediction of the cloudy pixels (blend + residual), NaN
        elsewhere and where there is no blend reference (or no S1 at the date)."""
        t_n, ny, nx = ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]
        out = np.full((t_n, len(BANDS), ny * nx), np.nan, "float32")
        for t, part in date_inputs(ds):
            rows = np.flatnonzero(part["cloudy"] & np.isfinite(part["blend"]).all(1))
            if not len(rows):
                continue
            x = _x(part, rows)
            residual = np.stack([m.predict(x) for m in self.models], 1)
            out[t][:, rows] = (part["blend"][rows] + residual).T
        return out.reshape(t_n, len(BANDS), ny, nx)
