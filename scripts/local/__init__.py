"""The embedded local deployment: the pinned GGUF models, their llama.cpp servers, and the
runtime that starts Redis, the workers and the servers for `sale run` and `sale up`."""
