"""EHR: the paper's feature engineering from raw MEDS events, and the release's feature tables."""
