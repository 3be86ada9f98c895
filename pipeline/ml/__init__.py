"""Machine learning: regime features and models, the vol forecast, their out-of-sample evidence and the model registry."""
