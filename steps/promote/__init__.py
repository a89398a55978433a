"""Promote stage: register every evaluated model as a version; move `production` only where the gates passed."""
