"""The whole benchmark as one command: a typed config, cached stages, the demo, scoring."""
