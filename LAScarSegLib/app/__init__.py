"""app: the jobs a user runs.

The segment-and-quantify pipeline (load, infer, read out, write all or nothing), the `lascarseg`
command line and its subcommands (batch, evaluate, bench, demo, phantom), and the background
worker (the child that runs the pipeline, and the torch-free client that starts, follows and
cancels it).
"""
