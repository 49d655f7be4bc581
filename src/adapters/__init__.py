"""vkubelet.adapters."""
