"""Services: the engine's use cases. Routes call them; they use repositories and agents."""
