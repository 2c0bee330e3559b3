"""The auction memory: task embeddings, retrieval of similar past jobs and their
(losing plan, winning plan) pairs, and the memory's export and import."""
