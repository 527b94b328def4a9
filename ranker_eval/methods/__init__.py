"""Selection methods scored on the cached candidates."""
