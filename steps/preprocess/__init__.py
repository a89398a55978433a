"""The preprocess stage: turn one modality's raw artifact into model-ready features, the input spec a model
must carry, and a quarantine of the records that could not be used."""
