"""`python -m doctor`: checks every connection this machine needs, says what is wrong and how to fix it."""
