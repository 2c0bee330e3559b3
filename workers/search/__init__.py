"""The local search corpus, its index and the search backends."""
