"""nsq-operator: one single-CPU worker Deployment per nsqd."""
