"""vkubelet.application."""
