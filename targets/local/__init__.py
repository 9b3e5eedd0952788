"""specml targets.local."""
