"""One module per verb; each is a short function over the shared pieces."""
