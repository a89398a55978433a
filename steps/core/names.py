"""The names every stage and command shares: the three models, the modality each learns from, the modalities, the
default home, the features' file names."""

MODEL_NAMES = ("spectral", "lightcurve", "sed")
MODALITY = {"spectral": "spectra", "lightcurve": "lightcurves", "sed": "photometry"}  # model -> what it reads
MODALITIES = ("spectra", "photometry", "lightcurves")
DEFAULT_HOME = ".stellar"  # a command's home when neither --home nor STELLAR_HOME gives one
FEATURES_FILE, SPEC_FILE = "features.parquet", "spec.json"  # a modality's features and their spec (preprocess, split)
