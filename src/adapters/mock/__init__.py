"""vkubelet.adapters.mock."""
