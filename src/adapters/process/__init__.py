"""The process provider: runs each container's command as a local process tree."""
