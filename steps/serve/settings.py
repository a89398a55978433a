"""The API's settings: environment variables `STELLAR_API_*` (pydantic-settings), overridden by `stellar serve` flags.

A Kubernetes Deployment sets them from its values and the token from a Secret; a local `stellar serve` takes the
defaults, which suit one small machine.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServeSettings(BaseSettings):
    """Everything the prediction API can be told; each field is also `STELLAR_API_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="STELLAR_API_", extra="ignore")

    registry: str = Field(".stellar/registry", description="model registry URI (a folder or s3://bucket/prefix)")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL for an s3:// registry (MinIO, moto)")
    cache_dir: Path = Field(Path(".stellar/serving"), description="where model versions are downloaded")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes (each loads every model)")
    token: SecretStr | None = Field(None, description="bearer token required on /v1/*; unset: no auth")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty: CORS off")
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="larger request bodies get 413")
    max_objects: int = Field(4096, ge=1, description="objects per request; more get 413")
    batch_max_objects: int = Field(64, ge=1, description="most objects per micro-batched model call")
    queue_max_objects: int = Field(65536, ge=1, description="objects waiting per model; more get 503")
    batch_max_wait_ms: float = Field(0.0, ge=0.0, description="longest a request waits for others to batch with; "
                                     "0: batch what queued while the model was busy (fastest here, see README)")
    reload_interval_s: float = Field(5.0, gt=0.0, description="how often the registry's production alias is read")
    inference_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads (0: TensorFlow's default)")
    access_log: bool = Field(True, description="one JSON line per request (never the payload)")
    graceful_shutdown_s: int = Field(30, ge=1, description="seconds in-flight requests may take to finish on stop")
