"""vkubelet.adapters.kubeletapi."""
