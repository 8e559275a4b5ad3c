"""A physically motivated synthetic S1/S2/DEM cube with known cloud-free truth.

No large real Sentinel-1/Sentinel-2/DEM time series is available offline, so tests, examples and
benchmarks use this simulator. The scene is built so that the paper's ordering of model variants
(S < SD < SO < SOD) is learnable:

- a fractal DEM with carved river valleys drives land cover (water low and flat, crops and towns
  on low gentle slopes, forest on mid slopes, grass higher, bare rock at the top), terrain
  illumination of the optical image and winter snow on high ground -- so the DEM carries
  information the SAR lacks;
- optical reflectance mixes per-class soil and canopy spectra with seasonal phenology (crop
  parcels with their own sowing dates and a sharp harvest) and a persistent within-class
  brightness field that the SAR does not see -- so the reference S2 image carries information
  the SAR lacks;
- SAR backscatter (dB) depends on class, local incidence angle, a per-date soil moisture / wind
  field and crop growth, with multiplicative gamma speckle and a thermal noise floor;
- optionally (``surface_change``), patches of forest are cleared and fields tilled or flooded at
  their own dates, changing reflectance and backscatter together, and wet snow darkens the
  radar in the melt season -- so SAR at the target date shows change the optical references
  cannot;
- clouds are thresholded fractal fields (bright, soft-edged) with shadows offset along the sun
  direction; the threshold is a quantile so each date gets the cloud fraction asked for.

Every value is a pure function of global pixel indices, the date and the seed: lattice noise
values come from an integer hash of (lattice index, octave, field, seed), slopes come from the
DEM evaluated one pixel beyond each block, and speckle from a per-pixel hash. Results are
therefore bit-identical whatever the chunking, and large scenes are built lazily, one dask task
per block and date, without ever allocating the whole cube.

The package is split along those seams: ``noise`` (hashing and lattice noise), ``constants``
(the physical tables), ``scene`` (settings, sun and season), ``blocks`` (one block of static
layers, of an S2 date or of an S1 date), ``args`` (argument checks) and ``api``
(``simulate_scene`` and the dask assembly).
"""

from __future__ import annotations

from cloudfill.cube.simulate.api import simulate_scene
from cloudfill.cube.simulate.constants import LULC_CLASSES

__all__ = ["LULC_CLASSES", "simulate_scene"]
