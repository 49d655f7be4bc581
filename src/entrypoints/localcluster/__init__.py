"""vkubelet.entrypoints.localcluster."""
