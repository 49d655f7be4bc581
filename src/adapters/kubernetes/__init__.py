"""vkubelet.adapters.kubernetes."""
