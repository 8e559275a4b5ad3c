"""The per-pixel gradient-boosting baseline of issue 21, on whole scenes.

``probe_learning.py`` builds its samples for pixels with a clear value on both sides only; a
benchmark that scores a fill needs a prediction for every pixel the fill synthesizes. This
module builds the same inputs (``probe_learning.features(..., "full")``: the blend reference,
both sides' nearest clear values and ages, S1 at the target and at both sides' dates, the
DEM) for every pixel of a date, with NaN where a side has no clear value within the pairing
rule's 120 days (HistGradientBoosting routes NaN itself), and fits one
HistGradientBoostingRegressor per band to the residual ``truth - blend``.

Same package functions as the probe: ``cloud_mask``, S1 despeckled with window 5,
``reference_candidates`` (120 days, both sides), ``nearest_s1`` (6 days) and
``blend_with_sides`` (the blend reference and the two sides it blended).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import xarray as xr
from probe_learning import DESPECKLE, RULE, features

from cloudfill.core.condition import blend_with_sides
from cloudfill.core.pairs import cloud_fractions, nearest_s1, reference_candidates
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS, POLS
from cloudfill.preprocess.despeckle import despeckle


def date_inputs(ds: xr.Dataset) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Per S2 date with S1 within 6 days and a reference candidate: its index and the
    probe's inputs as (pixels, channels) arrays over the whole image (row-major), with
    ``truth`` when the cube has it."""
    mask = cloud_mask(ds).values.astype(bool)
    s2 = ds["s2"].sel(band=list(BANDS)).values
    truth = ds["truth"].sel(band=list(BANDS)).values if "truth" in ds else None
    s1 = despeckle(ds, DESPECKLE)["s1"].sel(pol=list(POLS)).values  # dB
    dem = ds["dem"].values
    s2_dates = pd.DatetimeIndex(ds["time"].values)
    s1_dates = pd.DatetimeIndex(ds["s1_time"].values)
    frac = cloud_fractions(ds).to_numpy()

    def flat(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0], -1).T if a.ndim == 3 else a.reshape(-1, 1)

    for t, date in enumerate(s2_dates):
        s1_date, _ = nearest_s1(s1_dates, date, RULE.s1_gap)
        if pd.isna(s1_date):
            continue
        s1_t = s1[s1_dates.get_loc(s1_date)]
        chosen = reference_candidates(s2_dates, frac, date, RULE.ref_age, "nearest")
        if not chosen:
            continue
        ks = [s2_dates.get_loc(d) for d in chosen]
        offsets = [(d - date) / pd.Timedelta(days=1) for d in chosen]
        near = [nearest_s1(s1_dates, d, RULE.s1_gap)[0] for d in chosen]
        radar = [None if pd.isna(w) else s1[s1_dates.get_loc(w)] for w in near]
        blend, sides = blend_with_sides(
            [s2[k] for k in ks], [mask[k] for k in ks], offsets, radar, s1_t
        )
        nan4, nan2 = np.full_like(blend, np.nan), np.full_like(s1_t, np.nan)
        nan1 = np.full(blend.shape[1:], np.nan, "float32")
        (vb, ab, sb), (va, aa, sa) = (
            (nan4, nan1, nan2) if s is None else (s.value, s.age, s.radar) for s in sides
        )
        part = {
            "blend": flat(blend),
            "s1": flat(s1_t),
            "dem": flat(dem),
            "before": flat(vb),
            "after": flat(va),
            "ages": np.concatenate([flat(ab), flat(aa)], 1),
            "s1_before": flat(sb),
            "s1_after": flat(sa),
            "cloudy": mask[t].ravel(),
        }
        if truth is not None:
            part["truth"] = flat(truth[t])
        yield t, {k: v.astype("float32") if k != "cloudy" else v for k, v in part.items()}


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
