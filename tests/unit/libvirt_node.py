"""A private libvirt ``test:///`` node for agent tests: each test gets its own node XML file
(never the process-wide ``test:///default``), so tests share no domains."""

from __future__ import annotations

from pathlib import Path

NODE_XML = """\
<node>
  <cpu>
    <nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>
    <active>2</active><mhz>2000</mhz><model>x86_64</model>
  </cpu>
  <memory>4194304</memory>
</node>
"""


def private_node_uri(tmp_path: Path) -> str:
    """The URI of a fresh test-driver node (2 CPUs, 4 GiB) kept in ``tmp_path``."""
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    return "test://" + str(node)
