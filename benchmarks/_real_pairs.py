"""Real BigEarthNet S1/S2 pairs for the real-data benchmark: loading, the split, the mosaic
cube, the baselines and the per-pair scores (used by ``bench_real_s1s2.py``).

The split is by *datatake* (satellite + sensing start, the ``S2x_MSIL2A_<time>`` part of a
patch name; patches of one datatake share the orbit pass, hence often the tile and the
weather), never by patch: no datatake has pairs on both sides. The two GeoTIFF datatakes
that also hold npz pairs (2017-06-13 S2A, 2017-06-17 S2A) are test datatakes, so the GeoTIFF
set is a test of places, dates and a release the model never saw.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

import cloudfill

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NPZ = "bigearthnet_v1_pairs/benv1_mock_30pairs.npz"
GEOTIFF = "bigearthnet_pairs"

TEST_DATATAKES: tuple[str, ...] = (
    "S2A_20170613T101031",  # sea (its datatake also holds the GeoTIFF Austria pair)
    "S2A_20170617T113321",  # arable / pasture, Ireland datatake (two GeoTIFF pairs)
    "S2A_20171121T112351",  # moors and heathland
    "S2B_20170906T1010",  # three sea patches and one arable/forest/peat (T101019, T101020)
    "S2B_20180515T094029",  # three forest / water patches
    "S2B_20180525T9403",  # forest, arable (T94030, T94031)
)
"""npz test datatakes (prefix match on :func:`datatake`): 12 pairs, 4 of them sea."""

BRIGHT_DATATAKES: tuple[str, ...] = ("S2B_20180417T102019",)
"""Training datatake whose two S2 patches are snow/cloud-white (0.4 in every band): the
"ridge, bright pairs dropped" baseline leaves them out (least squares follows them)."""

SNOW_PAIR = "S2B_MSIL2A_20180204T94161_57_38"
"""The GeoTIFF pair under snow/cloud (Finland, February): ``tif-test-5`` leaves it out."""

SIZE = 120  # pixels of a BigEarthNet 10 m patch
CELL = 128  # mosaic cell: a pair plus 4 px of padding on each side (S1 reflected, S2 NaN)
PAD = (CELL - SIZE) // 2


@dataclass(frozen=True)
class Pair:
    """One co-registered pair: S1 VV, VH in dB (2, 120, 120), S2 B02..B08 reflectance
    (4, 120, 120) with NaN where the product has no data (DN 0)."""

    name: str
    s1: np.ndarray
    s2: np.ndarray

    @property
    def datatake(self) -> str:
        return datatake(self.name)


def datatake(name: str) -> str:
    """``S2B_20180515T094029`` from ``S2B_MSIL2A_20180515T094029_32_47``."""
    m = re.match(r"(S2[AB])_MSIL2A_(\d{8}T\d+)_\d+_\d+$", name)
    if m is None:
        raise ValueError(f"not a BigEarthNet S2 patch name: {name}")
    return f"{m.group(1)}_{m.group(2)}"


def _reflectance(dn: np.ndarray) -> np.ndarray:
    s2 = dn.astype(np.float32) / 10000.0
    s2[dn == 0] = np.nan
    return s2


def load_npz_pairs(data: Path = DATA) -> list[Pair]:
    """The 30 BigEarthNet v1 pairs of ``bigearthnet_v1_pairs`` (npz)."""
    z = np.load(data / NPZ)
    return [
        Pair(
            str(n),
            z["s1_vv_vh_db"][i].astype(np.float32),
            _reflectance(z["s2_10m_B02_B03_B04_B08"][i]),
        )
        for i, n in enumerate(z["ids"])
    ]


def load_geotiff_pairs(data: Path = DATA) -> list[Pair]:
    """The 6 GeoTIFF pairs of ``bigearthnet_pairs`` (another release of BigEarthNet-MM)."""
    import rasterio

    root = data / GEOTIFF
    pairs = []
    for s1_dir in sorted((root / "BigEarthNet-S1-Example").iterdir()):
        meta = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())
        s2_name = meta["corresponding_s2_patch"]
        s2_dir = root / "BigEarthNet-S2-Example" / s2_name

        def read(path: Path) -> np.ndarray:
            with rasterio.open(path) as src:
                return src.read(1)

        s1 = np.stack([read(next(s1_dir.glob(f"*_{p}.tif"))) for p in cloudfill.POLS])
        dn = np.stack([read(next(s2_dir.glob(f"*_{b}.tif"))) for b in cloudfill.BANDS])
        pairs.append(Pair(s2_name, s1.astype(np.float32), _reflectance(dn)))
    return pairs


def split_npz(pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """(train, test) by datatake: :data:`TEST_DATATAKES` are the test ones."""
    is_test = [any(p.datatake.startswith(t) for t in TEST_DATATAKES) for p in pairs]
    train = [p for p, t in zip(pairs, is_test, strict=True) if not t]
    test = [p for p, t in zip(pairs, is_test, strict=True) if t]
    assert not {p.datatake for p in train} & {p.datatake for p in test}
    return train, test


def mosaic_cube(pairs: list[Pair], cols: int = 6, date: str = "2018-01-01") -> xr.Dataset:
    """The pairs side by side on a made-up 10 m UTM grid: one S2 date, one S1 date, no DEM
    (zeros).

    Each pair sits in a 128 px cell (4 px border: S1 reflected so the despeckling window and
    the generator see the pair's own backscatter, S2 NaN so no border pixel is a target).
    With a 64 px patch ``cloudfill train`` then picks 128 px split blocks: one pair per
    block, so its validation and test splits are whole pairs.
    """
    rows = -(-len(pairs) // cols)
    if rows * cols != len(pairs):
        raise ValueError(f"{len(pairs)} pairs do not fill a grid of {cols} columns")
    s1 = np.zeros((1, 2, rows * CELL, cols * CELL), np.float32)
    s2 = np.full((1, 4, rows * CELL, cols * CELL), np.nan, np.float32)
    for i, pair in enumerate(pairs):
        r, c = divmod(i, cols)
        ys, xs = slice(r * CELL, (r + 1) * CELL), slice(c * CELL, (c + 1) * CELL)
        s1[0, :, ys, xs] = np.pad(pair.s1, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="reflect")
        inner = (
            slice(r * CELL + PAD, r * CELL + PAD + SIZE),
            slice(c * CELL + PAD, c * CELL + PAD + SIZE),
        )
        s2[0, :, inner[0], inner[1]] = pair.s2
    return _cube(s1, s2, date)


def pair_cube(pair: Pair, date: str = "2018-01-01") -> xr.Dataset:
    """One pair as a cube (what the model synthesizes for scoring)."""
    return _cube(pair.s1[None], pair.s2[None], date)


def _cube(s1: np.ndarray, s2: np.ndarray, date: str) -> xr.Dataset:
    ny, nx = s2.shape[-2:]
    x = 500005.0 + 10.0 * np.arange(nx)
    y = 5000005.0 - 10.0 * np.arange(ny)
    t = pd.to_datetime([date])
    ds = xr.Dataset(
        {
            "s2": (("time", "band", "y", "x"), s2, {"units": "1"}),
            "s1": (("s1_time", "pol", "y", "x"), s1, {"units": "dB"}),
            "dem": (("y", "x"), np.zeros((ny, nx), np.float32)),
            "cloud": (("time", "y", "x"), np.zeros((len(t), ny, nx), bool)),
        },
        coords={
            "time": t,
            "s1_time": t,
            "band": list(cloudfill.BANDS),
            "pol": list(cloudfill.POLS),
            "y": y,
            "x": x,
        },
    )
    return ds.rio.write_crs("EPSG:32633")


# --- baselines --------------------------------------------------------------------------
def ridge_features(s1_db: np.ndarray) -> np.ndarray:
    """(9, y, x): VV, VH, VV - VH (dB) and their 5 px and 15 px local means."""
    vv, vh = s1_db
    base = np.stack([vv, vh, vv - vh]).astype(np.float64)
    means = [ndimage.uniform_filter(base, size=(1, k, k), mode="reflect") for k in (5, 15)]
    return np.concatenate([base, *means])


@dataclass
class RidgeBaseline:
    """sklearn ``Ridge`` from :func:`ridge_features` to the 4 bands, fit on train pixels."""

    alpha: float = 1.0
    exclude: tuple[str, ...] = ()

    def fit(self, pairs: list[Pair]) -> RidgeBaseline:
        from sklearn.linear_model import Ridge

        xs, ys = [], []
        for p in pairs:
            if any(p.datatake.startswith(d) for d in self.exclude):
                continue
            f = ridge_features(p.s1).reshape(9, -1).T
            t = p.s2.reshape(4, -1).T
            ok = np.isfinite(t).all(1) & np.isfinite(f).all(1)
            xs.append(f[ok])
            ys.append(t[ok])
        self.model = Ridge(alpha=self.alpha).fit(np.concatenate(xs), np.concatenate(ys))
        return self

    def predict(self, pair: Pair) -> np.ndarray:
        f = ridge_features(pair.s1).reshape(9, -1).T
        return self.model.predict(f).T.reshape(4, SIZE, SIZE).astype(np.float32)


def train_mean(pairs: list[Pair]) -> np.ndarray:
    """(4,) mean reflectance of the training pairs' valid pixels."""
    return np.nanmean(np.stack([p.s2 for p in pairs]), axis=(0, 2, 3)).astype(np.float32)


# --- scoring ----------------------------------------------------------------------------
def score(preds: list[np.ndarray], pairs: list[Pair]) -> dict[str, float]:
    """MAE, PSNR, SSIM (:func:`cloudfill.metrics.all_metrics`) per pair, then the mean over
    pairs (SSIM per patch: no window mixes two pairs)."""
    from cloudfill.metrics import all_metrics

    rows = [
        all_metrics(pr, p.s2, np.isfinite(p.s2).all(0)) for pr, p in zip(preds, pairs, strict=True)
    ]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("mae", "psnr", "ssim")}


def synthesize_pairs(model: object, pairs: list[Pair]) -> list[np.ndarray]:
    """The model's prediction for each pair, through ``cloudfill.synthesize`` (the model's
    own despeckling, normalisation and tiling), from a cube whose S2 is all no-data and
    cloudy: nothing of the truth can reach the prediction."""
    out = []
    for p in pairs:
        ds = pair_cube(p)
        ds["s2"] = ds.s2.where(False)
        ds["cloud"] = ~ds.cloud
        syn = cloudfill.synthesize(ds, ds.time.values[0], model)
        out.append(np.asarray(syn.values, np.float32))
    return out
