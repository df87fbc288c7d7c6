"""What predicts the next character: the network alone, mixed with a Kneser-Ney n-gram, or
learning as it reads (dynamic evaluation); the n-gram baseline; and the checkpoint a predictor
is saved in and built from. All predictors share one interface (predictor.Predictor)."""
