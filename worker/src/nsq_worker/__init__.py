"""NSQ worker: one gevent + gnsq consumer process per nsqd."""
