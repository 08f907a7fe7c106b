"""Judge mode's pure core (docs/judge.md): checkers, case planning, verdicts, summary.

No NATS, no sandbox: the runner and the cache are thin adapters over these modules.
"""
