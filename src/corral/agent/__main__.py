"""`python -m corral.agent`: the agent process (started by `corral up`, or alone on a host)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from corral.agent.app import AgentSettings, create_app


def main() -> None:
    p = argparse.ArgumentParser(prog="corral-agent", description=__doc__)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8444)
    p.add_argument("--token-file", type=Path, required=True)
    p.add_argument("--libvirt-uri", default="qemu:///system")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    settings = AgentSettings(state_dir=args.state_dir, token=args.token_file.read_text().strip(),
                             libvirt_uri=args.libvirt_uri)
    uvicorn.run(create_app(settings), host=args.listen, port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
