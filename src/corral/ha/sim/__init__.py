"""The HA simulator's parts (see corral.ha.simulator): the scenarios, the world's truth, the
engine as it runs there, and the invariants checked at every step."""
