"""Local mode: the operator's planner with a child process per nsqd instead of a Deployment.

gnsq_mp's controller done right: the same lookupd polling and plan as the Kubernetes backend, each
worker pinned to one core, restarted with backoff when it dies, and killed with its parent.
"""
