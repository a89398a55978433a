"""Preprocess raw objects exactly as a model's training data was: the model's input spec gives the parameters.

Batch prediction (`stellar predict`) and the API's file uploads both call `preprocess_as_trained`, so a spectrum
sent to either meets the grid, band set and view lengths the model learnt on. A result that does not match the
spec is a `SpecMismatch` saying how.
"""

from __future__ import annotations

from typing import Any

from steps.preprocess import lightcurves, photometry, spectra
from steps.preprocess.common import Features, RawArtifact


class SpecMismatch(ValueError):
    """Preprocessing made features that differ from the model's input spec."""


def check_spectral_grid(made: dict[str, Any], spec: dict[str, Any], what: str) -> None:
    """Raise SpecMismatch where the spectral features spec `made` has another grid or number of continuum-shape
    blocks than the model's `spec`: same-length vectors on another grid would be read as if on the model's."""
    grid, made_grid = spec["grid"], made.get("grid") or {}

    def off(key: str, tolerance: float) -> bool:
        return not abs(float(made_grid.get(key, "nan")) - float(grid[key])) <= tolerance

    if made_grid.get("length") != grid["length"] or off("loglam_start", 1e-9) or off("loglam_step", 1e-12):
        raise SpecMismatch(f"{what} the grid {_described(made_grid)}, but the model was trained on "
                           f"{_described(grid)}")
    blocks = spec.get("continuum_blocks")
    if blocks is not None and made.get("continuum_blocks") != blocks:
        raise SpecMismatch(f"{what} {made.get('continuum_blocks')} continuum-shape blocks, but the model was trained "
                           f"on {blocks}")


def _described(grid: dict[str, Any]) -> str:
    """A log-wavelength grid as a reader thinks of it: pixels, the first and last pixel's wavelength, and the
    spectral sampling (km/s per pixel); the raw spec where it lacks a field."""
    try:
        length, start, step = int(grid["length"]), float(grid["loglam_start"]), float(grid["loglam_step"])
    except (KeyError, TypeError, ValueError):
        return str(grid)
    first, last = 10 ** start, 10 ** (start + step * (length - 1))
    velocity = (10 ** step - 1) * 299792.458
    return f"{length} pixels, {first:.1f}-{last:.1f} A at {velocity:.1f} km/s a pixel"


def preprocess_as_trained(modality: str, raw: RawArtifact, spec: dict[str, Any]) -> Features:
    """Features of `raw` for a model whose input spec is `spec` (`spec.json` of the model directory)."""
    if modality == "spectra":
        grid = spec["grid"]
        length, start, step = int(grid["length"]), float(grid["loglam_start"]), float(grid["loglam_step"])
        low = start - step / 2
        features = spectra.preprocess_spectra(raw, length=length, wave_range=(10 ** low, 10 ** (low + step * length)))
        check_spectral_grid(features.spec, spec, "preprocessing made")
    elif modality == "photometry":
        features = photometry.preprocess_photometry(raw, deredden=bool(spec.get("dereddened", True)),
                                                    bands=tuple(spec["bands"]))
        if features.spec.get("bands") != spec["bands"]:
            raise SpecMismatch(f"preprocessing made the bands {features.spec.get('bands')}, but the model was "
                               f"trained on {spec['bands']}")
    elif modality == "lightcurves":
        features = lightcurves.preprocess_lightcurves(raw, global_length=int(spec["global_length"]),
                                                      local_length=int(spec["local_length"]),
                                                      workers=lightcurves.default_workers())
    else:
        raise ValueError(f"unknown modality {modality!r}")
    return features
