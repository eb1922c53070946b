"""The SDK's calls for the cluster's settings (a part of corral.client.Client)."""

from __future__ import annotations

from typing import Any

import httpx

from corral.api.cluster_policy import ClusterPolicy, ClusterPolicySet
from corral.api.cluster_settings import ClusterSetting, ClusterSettingSet
from corral.api.ha import CorosyncConf, HaStatus

_PATH = "/api/v1/cluster/settings"


class ClusterApi:
    """Mixed into Client, which does the HTTP."""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def cluster_settings(self) -> list[ClusterSetting]:
        return [ClusterSetting.model_validate(x) for x in self._json("GET", _PATH)]

    def cluster_setting(self, key: str) -> ClusterSetting:
        return ClusterSetting.model_validate(self._json("GET", f"{_PATH}/{key}"))

    def set_cluster_setting(self, key: str, value: bool | int | float | str) -> ClusterSetting:
        """Set ``key`` (text is parsed as the setting's kind: "on", "90s", "80%")."""
        body = ClusterSettingSet(value=value).model_dump(mode="json")
        return ClusterSetting.model_validate(self._json("PUT", f"{_PATH}/{key}", json=body))

    def unset_cluster_setting(self, key: str) -> ClusterSetting:
        """Back to the default."""
        return ClusterSetting.model_validate(self._json("DELETE", f"{_PATH}/{key}"))

    def cluster_policy(self) -> ClusterPolicy:
        """The balancing policy, each host's load and the balancer's recent decisions."""
        return ClusterPolicy.model_validate(self._json("GET", "/api/v1/cluster/policy"))

    def set_cluster_policy(self, req: ClusterPolicySet) -> ClusterPolicy:
        body = req.model_dump(mode="json", exclude_none=True)
        return ClusterPolicy.model_validate(self._json("PUT", "/api/v1/cluster/policy",
                                                       json=body))

    def ha_status(self) -> HaStatus:
        """Hosts' HA state (silence, fencing, quorum) and the HA VMs, with why any waits."""
        return HaStatus.model_validate(self._json("GET", "/api/v1/ha"))

    def corosync_conf(self, cluster_name: str = "corral") -> CorosyncConf:
        """The corosync.conf every host of the cluster needs (the hosts the engine has)."""
        return CorosyncConf.model_validate(self._json(
            "GET", "/api/v1/ha/corosync-conf", params={"cluster_name": cluster_name}))
