"""The agent: the action loop that executes a plan with tools, the tools themselves, the
self-checks on the prompt's own examples, and the verdict."""
