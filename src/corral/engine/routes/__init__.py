"""REST routes under /api/v1, one module per resource; each only calls its service."""
