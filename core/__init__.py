"""The vocabulary every package shares, with no Prefect in it: a segment's identity and the errors of outside services."""
