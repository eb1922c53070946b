"""Fence agents: running the ClusterLabs fence-agent programs (fence_ipmilan, fence_redfish,
fence_dummy, the lab's fence_corral_lab...) that power a host off, on, or say its state.

``agents`` finds an agent by its name (never a path); ``protocol`` runs one action of it
(options as ``key=value`` lines on standard input, secrets included: never in its argv, so
never in ``ps``; exit 0 done or on, 1 error, 2 off for ``status``); ``secrets`` keeps the
options that are passwords encrypted at rest.
"""

from corral.engine.fencing.agents import check_name, find_agent
from corral.engine.fencing.protocol import ACTIONS, AgentRun, run_agent

__all__ = ["ACTIONS", "AgentRun", "check_name", "find_agent", "run_agent"]
