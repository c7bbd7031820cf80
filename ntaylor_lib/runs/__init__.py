"""Runs: profiles, data, models, losses, the recorder contract, training and the run store.

The lowest layer: it imports nothing else of the package.
"""
