"""Calibrated error bars: coverage of the q-intervals before and after calibration.

    python benchmarks/bench_calibration.py [--model PATH] [--shape 256]
        [--fit-seeds 81 82 83 84] [--check-seeds 91 92 93] [--check-demo-seeds 95 96]
        [--write PATH]

Fits :func:`cloudfill.fill.calibrate.calibrate` on simulated scenes (``--fit-seeds``, each
seed in both designs: ``simulate_scene``'s defaults and the demo's), then fills other scenes
(``--check-seeds``: ``simulate_scene``'s design; ``--check-demo-seeds``: the demo's) and prints,
per scene, per kind of fill and overall, the share of the filled pixels' errors (against
``truth``, every band)
within ``b ln(1/(1-q))`` for q = 0.5, 0.8, 0.95: with ``b`` the model's raw Laplace scale
(before) and the calibrated ``error_scale`` (after). None of these seeds was used to train
the default model (seed 101) or in earlier held-out evaluations (61-66, 71-72); the fit and
the check share no scene. ``--write`` stores the calibration in that checkpoint's card
(weights byte-identical): how the shipped default model got its calibration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
from _machine import cpu_model, load

QS = (0.5, 0.8, 0.95)


def _markdown(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def _rows(name: str, label: str, error: np.ndarray, scale: np.ndarray, kind: np.ndarray):
    from cloudfill.model.calibration import coverage

    rows = []
    for which in ("synthesized", "interpolated", "all"):
        pick = np.ones(len(kind), bool) if which == "all" else kind == which
        e, b = error[pick], scale[pick]
        ok = np.isfinite(b)
        if not ok.any():
            continue
        cov = coverage(e[ok], b[ok], QS)
        rows.append(
            {
                "scene": name,
                "b": label,
                "pixels": which,
                "n (pixel x band)": int(ok.sum()),
                **{f"q={q}": cov[q] for q in QS},
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--shape", type=int, default=256)
    parser.add_argument("--fit-seeds", type=int, nargs="+", default=[81, 82, 83, 84])
    parser.add_argument("--check-seeds", type=int, nargs="*", default=[91, 92, 93])
    parser.add_argument("--check-demo-seeds", type=int, nargs="*", default=[95, 96])
    parser.add_argument("--write", default=None, help="store the calibration in this checkpoint")
    parser.add_argument(
        "--check-only",
        action="store_true",
        help="no fit: check the calibration already in the model's card",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import cloudfill
    from cloudfill.cube.demo import simulate_demo
    from cloudfill.fill.calibrate import calibrate, filled_errors, uncalibrated
    from cloudfill.fill.plan import resolve_model
    from cloudfill.model.calibration import write_calibration

    print(f"machine: {cpu_model()}, load {load()}")
    shape = (args.shape, args.shape)
    model = resolve_model(args.model)
    raw_model = uncalibrated(model)
    t0 = time.perf_counter()
    if args.check_only:
        from cloudfill.model.calibration import Calibration

        cal = Calibration.from_dict(model.card.calibration)
        print("checking the calibration in the model's card (no fit)")
    else:
        # Both designs, as the check: simulate_scene's defaults and the demo's.
        fit = [cloudfill.simulate_scene(shape, seed=s) for s in args.fit_seeds]
        fit += [simulate_demo(seed=s, shape=shape) for s in args.fit_seeds]
        cal = calibrate(raw_model, fit)
        elapsed = time.perf_counter() - t0
        print(f"calibrate on seeds {args.fit_seeds}, both designs: {elapsed:.1f} s")
    print(json.dumps({k: v for k, v in cal.to_dict().items() if k != "fitted_on"}))
    print(json.dumps(cal.fitted_on))
    model_cal = uncalibrated(model)
    if model_cal is model:
        import copy

        model_cal = copy.copy(model)
    model_cal.card = replace(model.card, calibration=cal.to_dict())

    checks = [(f"seed {s}", cloudfill.simulate_scene(shape, seed=s)) for s in args.check_seeds]
    demo_seeds = args.check_demo_seeds
    checks += [(f"demo-design {s}", simulate_demo(seed=s, shape=shape)) for s in demo_seeds]
    rows = []
    pooled = {"raw b": ([], [], []), "calibrated": ([], [], [])}
    t0 = time.perf_counter()
    for name, ds in checks:
        for label, m in (("raw b", raw_model), ("calibrated", model_cal)):
            out = ds.cloudfill.fill_series(m).compute()
            error, scale, _ = filled_errors(out, ds["truth"], limit=10**9)
            if label == "raw b":  # the uncalibrated run: finite scale = synthesized
                kind = np.where(np.isfinite(scale).all(axis=1), "synthesized", "interpolated")
            kind_b = np.broadcast_to(kind[:, None], error.shape).ravel()
            e, b = error.ravel(), scale.ravel()
            rows += _rows(name, label, e, b, kind_b)
            for part, arr in zip(pooled[label], (e, b, kind_b), strict=True):
                part.append(arr)
    for label, (e, b, k) in pooled.items():
        e, b, k = (np.concatenate(v) for v in (e, b, k))
        rows += _rows("all check scenes", label, e, b, k)
    print(f"check fills: {time.perf_counter() - t0:.1f} s")
    table = pd.DataFrame(rows)
    print(_markdown(table))
    if args.write and not args.check_only:
        path = args.write
        before = hashlib.sha256(open(path, "rb").read()).hexdigest()
        write_calibration(path, cal)
        print(f"wrote the calibration into {path}; file sha256 before {before[:12]}")


if __name__ == "__main__":
    main()
