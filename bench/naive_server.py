"""The two naive servers the API benchmark compares against: FastAPI, one model call per request, no batching.

    python bench/naive_server.py --model-dir DIR --mode predict|function --port 8101

Both take the API's JSON body (`{"instances": [...]}` through a pydantic model, as a plain FastAPI app would)
and encode and decode exactly as the API does (the model's own `Predictor`); only the network call differs:
- `predict`: Keras `model.predict()` on the loaded `model.keras`, per request;
- `function`: the exported SavedModel's compiled `serve` function (a `tf.function`), per request.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from steps.models import load_model  # noqa: E402
from steps.models.io import KERAS_MODEL  # noqa: E402


class PredictRequest(BaseModel):
    """A batch of objects."""

    instances: list[dict[str, Any]]


def naive_app(model_dir: Path, mode: str) -> FastAPI:
    """A FastAPI app serving one model with one network call per request."""
    predictor = load_model(model_dir)
    if mode == "predict":
        import keras

        network = keras.models.load_model(model_dir / KERAS_MODEL, compile=False)
        predictor._graph = lambda arrays: network.predict(arrays, verbose=0)
    app = FastAPI(title=f"naive {mode} server")

    @app.post(f"/v1/{predictor.name}:predict")
    def predict(request: PredictRequest) -> dict[str, Any]:
        rows = predictor.predict_records(request.instances)
        return {"model": predictor.name, "predictions": [{key: None if value != value else value  # NaN -> null
                                                          for key, value in row.items()} for row in rows]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--mode", choices=("predict", "function"), required=True)
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(naive_app(args.model_dir, args.mode), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
