"""The isolated runner for the coding agent's programs and its limits."""
