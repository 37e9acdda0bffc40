"""Proving that two models compute the same thing: inputs, comparison, and the comparison run."""
