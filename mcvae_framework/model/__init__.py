"""Layer 2, the model and its loss: ``MCEVAE`` (``mcevae``) and the modified ELBO term by
term (``losses``)."""
