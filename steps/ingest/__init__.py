"""The ingest stage: fetch one modality's raw observations (from an archive or the synthetic source) into a raw
artifact whose tables keep each archive's own units and conventions, so preprocessing is written once."""
