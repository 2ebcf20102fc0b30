"""shopmesh: the shared platform every service stands on."""
