"""High availability: the decisions, pure, on a clock given to them.

``model`` says what the decisions see (hosts as the engine hears them, HA VMs) and what
they decide; ``policy`` is the engine's side (who is lost, who to fence, which VMs may run
again elsewhere, in which order); ``lease`` is a host's side (how long it may keep its HA VMs
running without a word from the engine or its quorum). Two worlds drive them: the engine's
HA loop (engine/ha_loop.py) with real agents and fence agents, and the simulator
(corral.ha.simulator) on a virtual clock that checks, at every step, that no VM ever runs on
two hosts.
"""
