"""specml cli."""
