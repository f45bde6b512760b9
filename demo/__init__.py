"""The demos a newcomer runs first: `make demo` (local mode) and `make demo-kube` (the operator)."""
