"""The small core that every stage shares: artifact directories and manifests, storage, the model registry."""
