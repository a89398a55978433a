"""Deploy stage: record which model versions the prediction API must serve, and publish that record."""
