"""The node agent, in parts.

- :mod:`.state`: the state machine (an Enum), the node's shared live state and the clock;
- :mod:`.supervisor`: starts, watches and restarts Ray;
- :mod:`.control_server`: the Unix-socket control API and the host's cluster API;
- :mod:`.heartbeats`: a worker's beats to the host, and the host's book of them;
- :mod:`.lending_loop`: lend this machine only while its owner is away; pause and resume;
- :mod:`.host_services`: the host's job queue, discovery and pairing;
- :mod:`.node_ops`: info, status, logs and leave;
- :mod:`.ray_link`: the one facade over Ray's dashboard and CLI the parts use;
- :mod:`.node`: the wiring, and :class:`Agent`, the process's entry point.
"""

from .node import Agent, AgentLock

__all__ = ["Agent", "AgentLock"]
