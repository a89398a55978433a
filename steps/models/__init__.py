"""The three stellar models: their on-disk format, the NumPy baselines, the Keras models, loading and prediction.

- `spectral`: spectrum -> Teff, log g, [Fe/H] (with 1-sigma uncertainties)
- `lightcurve`: folded light-curve views and period-search features -> class probabilities (period passed through)
- `sed`: multi-band photometry, colours and parallax -> Teff, log g, [Fe/H]

`load_model(dir)` returns a `Predictor` with `.name`, `.spec`, `.targets` or `.classes`, `predict_table(table)`
and `predict_records(records)`. Importing this package does not import TensorFlow: the Keras kinds
(`steps.models.keras`) import it only when such a model is trained or loaded.
"""

from steps.core.names import MODALITY, MODEL_NAMES
from steps.models.baseline import TASK, Trained, train_baseline
from steps.models.null import NullClassifier, NullRegressor, null_for
from steps.models.predictor import ClassifierPredictor, Predictor, RegressionPredictor, load_model

__all__ = [
    "MODALITY", "MODEL_NAMES", "TASK", "ClassifierPredictor", "NullClassifier", "NullRegressor", "Predictor",
    "RegressionPredictor", "Trained", "load_model", "null_for", "train_baseline",
]
