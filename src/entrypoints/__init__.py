"""vkubelet.entrypoints."""
