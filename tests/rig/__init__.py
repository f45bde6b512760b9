"""The test rig: real nsqd/nsqlookupd, a real Kubernetes control plane and a real Docker engine on loopback.

Used by the pytest fixtures in tests/conftest.py and by people through `python -m tests.rig up|down`.
"""
