"""The shop's domain services, one package each, all of the same shape."""
