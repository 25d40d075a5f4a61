"""Built-in priors plugin."""
