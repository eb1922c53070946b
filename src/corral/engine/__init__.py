"""The engine: control plane of corral (desired state, operations, API)."""
