"""History across runs (`isobench history`): the runs of one host as a series per figure,
the versions that changed between them, change points (Apache Otava's e-divisive means,
confirmed with isobench's own test on the rounds) and the gate a nightly CI job wants.

One job per module: runs.py (which runs form a series), versions.py (what changed between
them), points.py (each run's figures), changes.py (change points), build.py (the history
as one JSON-ready dict), text.py (the command's text) and page.py (its HTML).
"""
