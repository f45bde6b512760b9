"""Reliability and security scenarios (issue 8): faults injected into the real parts, messages counted.

Every scenario runs in the normal test suite at a small size; `NSQ_SOAK=1` (`make soak`) runs the same
scenarios at their long sizes. Each one records its row (load, fault, messages published, handled,
lost, duplicates, what the user saw) and `python -m tests.reliability.report` renders RELIABILITY.md.
"""
