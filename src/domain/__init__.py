"""vkubelet.domain."""
