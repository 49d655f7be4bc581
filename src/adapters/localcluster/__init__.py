"""vkubelet.adapters.localcluster."""
