"""`make bench`: the performance figures of docs/performance.md.

Run as `python -m bench` from the repository root; `bench.config` lists the parameters.
"""
