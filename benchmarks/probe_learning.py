"""Probe: why the SOD generator learns nothing beyond its blend reference (issue 21).

    python benchmarks/probe_learning.py                   # sections 1-3, about 5-6 min on 2 cores
    python benchmarks/probe_learning.py --quick           # 128 px scenes, fewer steps (~3-4 min)
    python benchmarks/probe_learning.py --no-pixels --generator 400   # section 4 only (~4 min)

Per-pixel samples come from simulated scenes (``simulate_scene``, 256 px, 16 dates; train
seeds 101-103, test seeds 61-63), built with the package's own functions: the cloud mask
(``cloud_mask``; the scene's ``truth`` is the clear truth), S1 despeckled with window 5
(``despeckle``, as training), the candidate dates (``reference_candidates``: 120 days, both
sides), their S1 dates (``nearest_s1``, 6 days), the blend reference and each side's nearest
clear value, age and S1 (``blend_with_sides``: what the network's reference channels hold,
with the sides it blended; :func:`date_inputs`, which ``_gbm_baseline.py`` shares). A
sample is a pixel of an S2 date with a clear value on both sides; "cloudy" samples are what
the fill must produce, "clear" ones what training scores (``PatchDataset``'s ``valid``).

1. The residual ``truth - blend``, in reflectance and in normalised units (``NormStats`` of
   seed 101 from ``training_stats``, as the default model), its heavy tail, and how much of
   it the clip of ``normalise_bands`` and the ``atanh`` clamp of the skip touch.
2. MAE on cloudy pixels, for two splits: held-out seeds (train 101-103, test 61-63) and the
   same seeds with a held-out half (train x < 128, test x >= 128; what the network's own
   validation is, a spatial split of its training scene). (a) the blend; (b) per-band
   HistGradientBoosting of the residual on the network's inputs (blend, S1 at target, DEM);
   (c) on the full inputs (both sides' values and ages, S1 at the target and both reference
   dates, DEM); (d) (c) without S1 / without S1 at the reference dates; (e) a per-pixel MLP
   (2x64) in the generator's form ``tanh(head + atanh(reference))`` with a zero last layer,
   normalised units, masked L1, no GAN: at step 0, at lr 1e-3, at the default model's
   schedule (lr 5e-5, 1116 steps, EMA 0.999) and at lr 1e-3 with and without that EMA;
   (f) trained on clear pixels, as the network is.
3. At initialisation of the default-model generator and PatchGAN on real training patches:
   the adversarial gradient vs ``lambda_l1 *`` the masked-L1 gradient (lambda 100, 10000).
4. (``--generator STEPS``) the real generator (16 filters, 4 blocks, CBAM) trained with pure
   masked L1 on 64 px patches of a seed-101 scene: batch norm at lr 1e-3 and 5e-5, no norm,
   and with a per-pixel (1x1) path from the condition to the head; next to the per-pixel MLP
   on the same patches' pixels.

One run, one seed per model (no averaging); ratios are to (a) of the same split.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
import xarray as xr

import cloudfill
from cloudfill.core.condition import blend_with_sides, normalise_bands
from cloudfill.core.pairs import PairingRule, cloud_fractions, nearest_s1, reference_candidates
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS, POLS
from cloudfill.preprocess.despeckle import despeckle
from cloudfill.training.targets import training_stats

RULE = PairingRule()
# The cloud fractions of scripts/train_default_model.py (its 16 dates).
CLOUD = (0.0, 0.1, 0.4, 0.0, 0.3, 0.05, 0.6, 0.15, 0.0, 0.5, 0.25, 0.1, 0.0, 0.35, 0.2, 0.05)
DESPECKLE = 5
# What date_inputs gives per pixel, and scene_samples keeps.
INPUTS = ("blend", "truth", "s1", "dem", "before", "after", "ages", "s1_before", "s1_after")


def markdown(rows: list[dict[str, object]]) -> str:
    """A list of dicts as a markdown table (floats to 4 significant digits)."""
    cols = list(rows[0])
    cell = lambda v: f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- samples
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


def scene_samples(
    seed: int, shape: int, dates: int, n_clear: int, **scene: object
) -> dict[str, np.ndarray]:
    """Per-pixel samples of one simulated scene (cloudy pixels, and a subsample of clear
    ones), both with a clear value on each side of the target; ``scene``: more arguments of
    ``simulate_scene`` (e.g. ``surface_change``)."""
    ds = cloudfill.simulate_scene((shape, shape), dates=dates, seed=seed, **scene)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[np.ndarray]] = {}
    for t, part in date_inputs(ds):
        both = np.isfinite(part["before"]).all(1) & np.isfinite(part["after"]).all(1)
        for kind, where in (("cloudy", part["cloudy"] & both), ("clear", ~part["cloudy"] & both)):
            idx = np.flatnonzero(where)
            if kind == "clear" and len(idx) > n_clear:
                idx = rng.choice(idx, n_clear, replace=False)
            sample = {k: part[k][idx] for k in INPUTS}
            sample["date"] = np.full(len(idx), t)
            sample["col"] = idx % shape
            for name, value in sample.items():
                rows.setdefault(f"{kind}/{name}", []).append(value.astype("float32"))
    return {k: np.concatenate(v) for k, v in rows.items()}


def gather(
    seeds: list[int], shape: int, dates: int, n_clear: int, **scene: object
) -> dict[str, np.ndarray]:
    parts = []
    for seed in seeds:
        part = scene_samples(seed, shape, dates, n_clear, **scene)
        for kind in ("cloudy", "clear"):
            part[f"{kind}/seed"] = np.full(len(part[f"{kind}/date"]), seed)
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def subset(d: dict[str, np.ndarray], keep: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows ``keep[kind]`` (boolean or indices) of each kind."""
    return {k: v[keep[k.split("/")[0]]] for k, v in d.items() if k.split("/")[0] in keep}


def thin(d: dict[str, np.ndarray], n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """At most ``n`` random rows of each kind."""
    rng = np.random.default_rng(seed)
    keep = {}
    for kind in {k.split("/")[0] for k in d}:
        m = len(d[f"{kind}/date"])
        keep[kind] = np.sort(rng.choice(m, n, replace=False)) if m > n else np.arange(m)
    return subset(d, keep)


def features(d: dict[str, np.ndarray], kind: str, which: str) -> np.ndarray:
    """Raw (unnormalised) feature matrix of an input set."""
    g = lambda n: d[f"{kind}/{n}"]  # noqa: E731
    if which == "net":  # what the generator's condition stack holds
        cols = [g("blend"), g("s1"), g("dem")]
    elif which == "full":
        cols = [
            g("blend"),
            g("before"),
            g("after"),
            g("ages"),
            g("s1"),
            g("s1_before"),
            g("s1_after"),
            g("dem"),
        ]
    elif which == "full-diffS1":  # S1 as changes since each side, not as levels
        cols = [
            g("blend"),
            g("before"),
            g("after"),
            g("ages"),
            g("s1") - g("s1_before"),
            g("s1") - g("s1_after"),
            g("dem"),
        ]
    elif which == "full-noS1":
        cols = [g("blend"), g("before"), g("after"), g("ages"), g("dem")]
    elif which == "full-noRefS1":
        cols = [g("blend"), g("before"), g("after"), g("ages"), g("s1"), g("dem")]
    else:
        raise ValueError(which)
    x = np.concatenate(cols, 1)
    # S1 at a side without an S1 date within 6 days is NaN: HGB handles NaN; fill for nets.
    return x


# --------------------------------------------------------------------------- models
def gbm(train_x: np.ndarray, train_r: np.ndarray, test_x: np.ndarray, iters: int) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingRegressor

    out = np.empty((len(test_x), train_r.shape[1]), "float32")
    for b in range(train_r.shape[1]):
        model = HistGradientBoostingRegressor(max_iter=iters, early_stopping=False, random_state=0)
        out[:, b] = model.fit(train_x, train_r[:, b]).predict(test_x)
    return out


def norm_inputs(d: dict[str, np.ndarray], kind: str, which: str, stats) -> np.ndarray:
    """Inputs normalised like the condition stack (NaN -> 0); ages as days / 60."""
    g = lambda n: d[f"{kind}/{n}"]  # noqa: E731

    def s2n(a: np.ndarray) -> np.ndarray:
        return normalise_bands(a.T[:, :, None], stats, "s2", BANDS)[:, :, 0].T

    def s1n(a: np.ndarray) -> np.ndarray:
        return normalise_bands(a.T[:, :, None], stats, "s1", POLS)[:, :, 0].T

    dem = normalise_bands(g("dem").T[:, :, None], stats, "dem", ("dem",))[:, :, 0].T
    cols = [s2n(g("blend")), s1n(g("s1")), dem]
    if which == "full":
        cols += [
            s2n(g("before")),
            s2n(g("after")),
            g("ages") / 60.0,
            s1n(g("s1_before")),
            s1n(g("s1_after")),
        ]
    return np.concatenate(cols, 1).astype("float32")


class ResidualMLP(torch.nn.Module):
    """Per-pixel (1x1) stand-in of the generator: ``tanh(head(x) + atanh(reference))`` with
    a zero-initialised last layer, the reference being the first 4 inputs."""

    def __init__(self, n_in: int, width: int = 64) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(n_in, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, 4),
        )
        torch.nn.init.zeros_(self.body[-1].weight)
        torch.nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ref = x[:, :4].clamp(-0.999, 0.999)
        return torch.tanh(self.body(x) + torch.atanh(ref))


def train_mlp(x, y, test_x, *, steps, lr, ema=None, batch=4096, seed=0):
    torch.manual_seed(seed)
    net = ResidualMLP(x.shape[1])
    avg = copy.deepcopy(net) if ema else None
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)
        loss = (net(xt[idx]) - yt[idx]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if avg is not None:
            with torch.no_grad():
                for a, p in zip(avg.parameters(), net.parameters(), strict=True):
                    a.lerp_(p, 1 - ema)
    model = avg if avg is not None else net
    with torch.no_grad():
        return model(torch.from_numpy(test_x)).numpy()


def denorm(y: np.ndarray, stats) -> np.ndarray:
    off = np.array(stats.offset("s2"), "float32")
    sc = np.array(stats.scale("s2"), "float32")
    order = [list(stats.variables["s2"].labels).index(b) for b in BANDS]
    return y * sc[order] + off[order]


# --------------------------------------------------------------------------- GAN gradients
def gradient_check(stats, shape: int) -> list[dict[str, object]]:
    """Adversarial vs L1 gradient on the generator at initialisation, on real patches."""
    from cloudfill.model.discriminator import PatchDiscriminator
    from cloudfill.model.generator import Generator
    from cloudfill.model.losses import adversarial_loss, masked_l1
    from cloudfill.training.dataset import sample_patches
    from cloudfill.training.index import PatchSettings

    ds = cloudfill.simulate_scene((shape, shape), dates=16, seed=101, cloud_fraction=list(CLOUD))
    data = sample_patches(
        ds,
        "SOD",
        PatchSettings(128, overlap=32, block_size=128),
        reference="blend",
        stats=stats,
        despeckle=DESPECKLE,
    )
    items = [data[i] for i in np.linspace(0, len(data) - 1, 4).astype(int)]
    cond, target, valid = (torch.stack(x) for x in zip(*items, strict=True))
    torch.manual_seed(0)
    g = Generator("SOD", base_filters=16, n_blocks=4, attention="cbam", confidence=True)
    d = PatchDiscriminator("SOD", base_filters=32)
    d.requires_grad_(False)
    rows = []
    grads = {}
    for name in ("adv", "l1"):
        g.zero_grad()
        fake = g(cond).mean
        loss = (
            adversarial_loss(d(cond, fake), True)
            if name == "adv"
            else masked_l1(fake, target, valid)
        )
        loss.backward()
        grads[name] = torch.cat([p.grad.flatten() for p in g.parameters() if p.grad is not None])
        grads[name + "_head"] = g.head[-1].weight.grad.norm()
    for lam in (100.0, 10000.0):
        rows.append(
            {
                "lambda_l1": lam,
                "|grad adv| / |lambda grad L1|, all weights": float(
                    grads["adv"].norm() / (lam * grads["l1"].norm())
                ),
                "head weights": float(grads["adv_head"] / (lam * grads["l1_head"])),
            }
        )
    return rows


def _skip_generator():
    from torch import nn

    from cloudfill.model.generator import Generator, GeneratorOutput

    class SkipGenerator(Generator):
        """The generator whose head also sees a per-pixel (1x1 conv) embedding of the
        condition stack, next to the trunk's features (still zero-initialised)."""

        def __init__(self, *args, pixel: int = 32, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            cin, f = self.variant.n_inputs, self.base_filters
            self.pixel = nn.Sequential(
                nn.Conv2d(cin, pixel, 1), nn.ReLU(), nn.Conv2d(pixel, pixel, 1), nn.ReLU()
            )
            self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(f + pixel, 4, 7))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

        def forward(self, x: torch.Tensor) -> GeneratorOutput:
            logits = self.head(torch.cat([self.trunk(x), self.pixel(x)], 1))
            ref = x[:, self._reference_index].clamp(-0.999, 0.999)
            return GeneratorOutput(torch.tanh(logits + torch.atanh(ref)), None)

    return SkipGenerator


def generator_check(steps: int, every: int) -> list[dict[str, object]]:
    """The default-size generator (16 filters, 4 blocks, CBAM) trained with pure masked L1
    (no GAN, no EMA) on 64 px patches of a 384 px seed-101 scene (the default model's
    cloud mix), batch 4, Adam betas (0.5, 0.999); MAE (reflectance, clear pixels, eval mode
    as ``evaluate_patches``) on the train and val patches, next to a per-pixel MLP on the
    same condition channels and pixels."""
    from cloudfill.model.generator import Generator
    from cloudfill.model.losses import masked_l1
    from cloudfill.training.dataset import PatchDataset
    from cloudfill.training.index import PatchSettings, build_index
    from cloudfill.training.scoring import band_affine

    SkipGenerator = _skip_generator()
    ds = cloudfill.simulate_scene((384, 384), dates=16, seed=101, cloud_fraction=list(CLOUD))
    index = build_index(
        ds,
        "SOD",
        PatchSettings(64, overlap=0, block_size=64),
        reference="blend",
        despeckle=DESPECKLE,
    )
    split = {}
    for name in ("train", "val"):
        data = PatchDataset.from_index(index, name, augment=False)
        split[name] = [
            torch.stack(x) for x in zip(*[data[i] for i in range(len(data))], strict=True)
        ]
    scale = band_affine(index.stats)[1]

    def mae(model: torch.nn.Module | None, name: str) -> float:
        c, t, v = split[name]
        with torch.no_grad():
            pred = (
                c[:, 2:6].clamp(-0.999, 0.999)
                if model is None
                else torch.cat([model(c[i : i + 16]).mean for i in range(0, len(c), 16)])
            )
        w = v.expand_as(pred).float()
        return float(((pred - t).abs() * scale * w).sum() / w.sum())

    rows = [
        {
            "model": "step 0 (the blend)",
            "step": 0,
            "train MAE": mae(None, "train"),
            "val MAE": mae(None, "val"),
            "trunk output > 0": "",
        }
    ]

    def pixels(name: str) -> tuple[np.ndarray, np.ndarray]:
        c, t, v = split[name]
        c = c.permute(0, 2, 3, 1).reshape(-1, c.shape[1])[v.reshape(-1)]
        t = t.permute(0, 2, 3, 1).reshape(-1, 4)[v.reshape(-1)]
        return c[:, [2, 3, 4, 5, 0, 1, 6]].numpy(), t.numpy()  # reference first

    (x, y), (xv, yv) = pixels("train"), pixels("val")
    for kw in ({"steps": steps, "lr": 1e-3}, {"steps": 1116, "lr": 5e-5, "ema": 0.999}):
        err = np.abs(train_mlp(x, y, xv, **kw) - yv) * scale.view(1, 4).numpy()
        rows.append(
            {
                "model": f"per-pixel MLP {kw}",
                "step": kw["steps"],
                "train MAE": "",
                "val MAE": float(err.mean()),
                "trunk output > 0": "",
            }
        )
    configs = [
        ("generator", "batch", 1e-3),
        ("generator", "batch", 5e-5),
        ("generator", "none", 1e-3),
        ("generator + per-pixel path to the head", "batch", 1e-3),
    ]
    for label, norm, lr in configs:
        torch.manual_seed(0)
        kind = SkipGenerator if "per-pixel" in label else Generator
        g = kind("SOD", base_filters=16, n_blocks=4, attention="cbam", norm=norm)
        opt = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999))
        rng = np.random.default_rng(0)
        c, t, v = split["train"]
        for step in range(1, steps + 1):
            b = torch.from_numpy(rng.integers(0, len(c), 4))
            loss = masked_l1(g(c[b]).mean, t[b], v[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % every == 0 or step == steps:
                g.eval()
                with torch.no_grad():
                    alive = float((g.trunk(split["val"][0][:8]) > 0).float().mean())
                rows.append(
                    {
                        "model": f"{label}, norm={norm}, lr {lr:g}",
                        "step": step,
                        "train MAE": mae(g, "train"),
                        "val MAE": mae(g, "val"),
                        "trunk output > 0": alive,
                    }
                )
                g.train()
                print("   ", rows[-1], flush=True)
    return rows


# --------------------------------------------------------------------------- main
def residual_table(d: dict[str, np.ndarray], stats) -> list[dict[str, object]]:
    rows = []
    for kind in ("cloudy", "clear"):
        blend, truth = d[f"{kind}/blend"], d[f"{kind}/truth"]
        bn, tn = s2_norm(blend, stats), s2_norm(truth, stats)
        raw = s2_norm(truth, stats, clip=False)
        rows.append(
            {
                "pixels": kind,
                "n": len(truth),
                "MAE refl": float(np.abs(truth - blend).mean()),
                "median |r| refl": float(np.median(np.abs(truth - blend))),
                "MAE norm": float(np.abs(tn - bn).mean()),
                "median |r| norm": float(np.median(np.abs(tn - bn))),
                "MAE share of top 1 %": float(top_share(np.abs(truth - blend).mean(1))),
                "truth outside clip %": float(100 * (np.abs(raw) > 1).mean()),
                "ref at -1 (clamped) %": float(100 * (bn <= -0.999).mean()),
                "median d atanh/d ref": float(np.median(1 / (1 - np.clip(bn, -0.999, 0.999) ** 2))),
            }
        )
    return rows


def top_share(err: np.ndarray, q: float = 99.0) -> float:
    """Share of the summed error carried by the pixels above the ``q`` percentile."""
    return float(err[err > np.percentile(err, q)].sum() / err.sum())


def s2_norm(a: np.ndarray, stats, *, clip: bool = True) -> np.ndarray:
    """(n, 4) reflectance in normalised units, clipped (as normalise_bands) or not."""
    if clip:
        return normalise_bands(a.T[:, :, None], stats, "s2", BANDS)[:, :, 0].T
    off, sc = np.array(stats.offset("s2")), np.array(stats.scale("s2"))
    return (a - off) / sc


def methods(args: argparse.Namespace) -> list[tuple[str, str, str, dict | None]]:
    """(name, input set, training pixels, MLP settings or None for the GBM)."""
    fast = {"steps": args.steps, "lr": 1e-3}
    default = {"steps": 1116, "lr": 5e-5, "ema": 0.999}  # scripts/train_default_model.py
    return [
        ("(b) GBM, network inputs (blend, S1 target, DEM)", "net", "cloudy", None),
        ("(c) GBM, full inputs", "full", "cloudy", None),
        ("(d) GBM, full without any S1", "full-noS1", "cloudy", None),
        ("(d) GBM, full without S1 at reference dates", "full-noRefS1", "cloudy", None),
        ("(f) GBM, network inputs, trained on clear pixels", "net", "clear", None),
        ("(f) GBM, full inputs, trained on clear pixels", "full", "clear", None),
        (
            "(e) MLP at step 0 (blend through the clip and atanh clamp)",
            "net",
            "cloudy",
            {"steps": 0, "lr": 1e-3},
        ),
        (f"(e) MLP, network inputs, lr 1e-3, {args.steps} steps", "net", "cloudy", fast),
        (f"(e) MLP, full inputs, lr 1e-3, {args.steps} steps", "full", "cloudy", fast),
        (
            "(e) MLP, network inputs, default schedule: lr 5e-5, 1116 steps, EMA 0.999",
            "net",
            "cloudy",
            default,
        ),
        ("(e) MLP, full inputs, default schedule", "full", "cloudy", default),
        (
            "(e) MLP, network inputs, lr 1e-3, 1116 steps, no EMA",
            "net",
            "cloudy",
            {"steps": 1116, "lr": 1e-3},
        ),
        (
            "(e) MLP, network inputs, lr 1e-3, 1116 steps, EMA 0.999",
            "net",
            "cloudy",
            {"steps": 1116, "lr": 1e-3, "ema": 0.999},
        ),
        (
            f"(f) MLP, full inputs, lr 1e-3, {args.steps} steps, trained on clear",
            "full",
            "clear",
            fast,
        ),
    ]


def evaluate(train, test, stats, args) -> dict[str, tuple[float, float]]:
    """MAE and median AE (reflectance) of every method on the cloudy pixels of ``test``."""
    truth, base = test["cloudy/truth"], test["cloudy/blend"]
    ages = test["cloudy/ages"]
    w = ages[:, 1:2] / ages.sum(1, keepdims=True)
    preds = {
        "(a) blend reference": base,
        "(a') linear interpolation (time weights only)": (
            test["cloudy/before"] * w + test["cloudy/after"] * (1 - w)
        ),
    }
    for name, which, kind, mlp in methods(args):
        t1 = time.time()
        if mlp is None:
            r = train[f"{kind}/truth"] - train[f"{kind}/blend"]
            x_train, x_test = features(train, kind, which), features(test, "cloudy", which)
            preds[name] = base + gbm(x_train, r, x_test, args.gbm_iters)
        else:
            x_train = norm_inputs(train, kind, which, stats)
            y_train = s2_norm(train[f"{kind}/truth"], stats)
            pred = train_mlp(x_train, y_train, norm_inputs(test, "cloudy", which, stats), **mlp)
            preds[name] = denorm(pred, stats)
        print(
            f"    {name}: {np.abs(truth - preds[name]).mean():.5f} ({time.time() - t1:.0f} s)",
            flush=True,
        )
    return {
        k: (float(np.abs(truth - p).mean()), float(np.median(np.abs(truth - p))))
        for k, p in preds.items()
    }


def pixel_sections(args: argparse.Namespace, t0: float) -> None:
    """Sections 1-3."""
    n_clear = (args.shape * args.shape) // 4  # clear pixels kept per date
    train = gather(args.train, args.shape, args.dates, n_clear)
    test = gather(args.test, args.shape, args.dates, n_clear)
    stats = training_stats(
        cloudfill.simulate_scene((args.shape, args.shape), dates=args.dates, seed=args.train[0]),
        despeckle=DESPECKLE,
    )
    print(
        f"samples ({time.time() - t0:.0f} s): train cloudy {len(train['cloudy/truth'])}, "
        f"clear {len(train['clear/truth'])}; test cloudy {len(test['cloudy/truth'])}"
    )

    print(
        f"\n1. Residual truth - blend (normalised: NormStats of seed {args.train[0]}, "
        "training_stats; s2 range per band "
        + ", ".join(
            f"{b} {lo:.3f}..{hi:.3f}"
            for b, lo, hi in zip(
                BANDS, stats.variables["s2"].low, stats.variables["s2"].high, strict=True
            )
        )
        + ")"
    )
    for label, d in (("train seeds", train), ("test seeds", test)):
        print(f"\n{label} {args.train if d is train else args.test}:")
        print(markdown(residual_table(d, stats)))

    half = args.shape // 2
    schemes = {
        "held-out seeds": (thin(train, args.max_train), thin(test, args.max_test, 1)),
        "same seeds, held-out half": (
            thin(
                subset(train, {k: train[f"{k}/col"] < half for k in ("cloudy", "clear")}),
                args.max_train,
            ),
            thin(subset(train, {"cloudy": train["cloudy/col"] >= half}), args.max_test, 1),
        ),
    }
    scores = {}
    for label, (tr, te) in schemes.items():
        print(
            f"\n  {label}: train {len(tr['cloudy/truth'])} cloudy / {len(tr['clear/truth'])} "
            f"clear pixels, test {len(te['cloudy/truth'])} cloudy",
            flush=True,
        )
        scores[label] = evaluate(tr, te, stats, args)
    table = []
    for name in scores["held-out seeds"]:
        row: dict[str, object] = {"method": name}
        for label, short in (("held-out seeds", "seeds"), ("same seeds, held-out half", "half")):
            mae, med = scores[label][name]
            row[f"{short}: MAE"] = mae
            row[f"{short}: x (a)"] = mae / scores[label]["(a) blend reference"][0]
            row[f"{short}: median AE"] = med
        table.append(row)
    print(
        f"\n2. Reflectance error on cloudy pixels (clear value on both sides). Held-out "
        f"seeds: train {args.train}, test {args.test}. Same seeds: train on x < {half}, "
        f"test on x >= {half}. Training subsample {args.max_train} pixels; GBM per band "
        f"{args.gbm_iters} iterations; MLP 2x64 ReLU, batch 4096, Adam betas (0.5, 0.999)"
    )
    print(markdown(table))

    print(
        "\n3. Gradient on the generator at initialisation (default-model sizes, 4 patches of "
        "128 px, blend reference, scene of seed 101 with the default model's cloud mix)"
    )
    print(markdown(gradient_check(stats, max(args.shape, 256))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=256)
    parser.add_argument("--dates", type=int, default=16)
    parser.add_argument("--train", type=int, nargs="+", default=[101, 102, 103])
    parser.add_argument("--test", type=int, nargs="+", default=[61, 62, 63])
    parser.add_argument("--max-train", type=int, default=80_000, help="training pixels per kind")
    parser.add_argument("--max-test", type=int, default=300_000, help="test pixels")
    parser.add_argument("--gbm-iters", type=int, default=150)
    parser.add_argument("--steps", type=int, default=3000, help="fast MLP schedule (lr 1e-3)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--generator",
        type=int,
        default=0,
        metavar="STEPS",
        help="also train the real generator STEPS steps (section 4; slow)",
    )
    parser.add_argument("--no-pixels", action="store_true", help="skip sections 1-3")
    args = parser.parse_args()
    if args.quick:
        args.shape, args.gbm_iters, args.steps = 128, 100, 1500
        args.max_train, args.max_test = 30_000, 100_000
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    t0 = time.time()
    if not args.no_pixels:
        pixel_sections(args, t0)
    if args.generator:
        print("\n4. The real generator with pure L1 on patches (train / val MAE, eval mode)")
        print(markdown(generator_check(args.generator, max(1, args.generator // 4))))
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
