"""The paper's experiments as named runs, their learning-rate tuning, and its claims C1 to C7."""
