"""The quarantine's limit, and a refusal that names the records it set aside."""

import pytest

from steps.core.quarantine import Quarantine, TooManyBadRecords


def test_a_refusal_names_the_records_behind_each_reason():
    """'reasons include: an empty file (0 bytes)' named no file; 40 files of one reason named none of them."""
    quarantine = Quarantine("ingest.photometry")
    quarantine.add("gaia.csv", "an empty file (0 bytes)", "gaia.csv")
    for index in range(3):
        quarantine.add(f"kplr{index}", "not a Kepler or TESS light-curve file", f"curves/k{index}.fits")
    quarantine.add("x.fits", "x.fits: truncated FITS", "x.fits")                 # the reason names it already
    with pytest.raises(TooManyBadRecords) as refused:
        quarantine.check(6, 0.2)
    assert str(refused.value) == (
        "ingest.photometry: 5 of 6 records (83%) quarantined, over the limit of 20%; reasons include: "
        "not a Kepler or TESS light-curve file (3 records, e.g. curves/k0.fits); an empty file (0 bytes) (gaia.csv); "
        "x.fits: truncated FITS")
    quarantine.check(25, 0.2)                                                     # 5 of 25: within the limit
