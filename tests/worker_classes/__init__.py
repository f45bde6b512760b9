"""Worker classes the worker tests run in their own processes (never imported by pytest itself).

Importing any of them imports nsq_worker, which monkey-patches the interpreter for gevent, so the
tests start them as scripts or as `nsq-worker tests.worker_classes.<module>:<Class>`, with the
project root on PYTHONPATH. They are real modules so that ruff and mypy check them.
"""
