"""The in-memory mock provider: runs nothing, reports pods Running, as upstream's mock does."""
