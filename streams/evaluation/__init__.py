"""Evaluation of a run (production or a replay namespace) from its topics alone.

``run`` reads a namespace's topics into one record per turn, ``metrics`` computes the figures of one
run (with or without labels), ``compare`` pairs two runs by message id and decides per metric with a
paired bootstrap, ``report`` prints tables and writes the self-contained HTML report.
"""
