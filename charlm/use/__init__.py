"""Using a predictor: sampling text and scoring it."""
