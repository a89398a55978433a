"""The split stage: train / validation / test sets for every modality, assigned by object id so that an object
keeps its set as the data grows week to week."""
