"""nftables, through the ``nft`` command: the only module that runs it.

It reads the ruleset (which input chain filters, for the doctor's fix lines) and keeps one
table of lanray-tui's own, made and removed whole: a table of its own never edits the
owner's rules, and removing it takes back exactly what was added. Changing the ruleset needs
root or CAP_NET_ADMIN; without them, or without ``nft``, every call says why in one line and
changes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence

FAMILY = "inet"  # IPv4 and IPv6 in one table
OWN_PREFIX = "lanray_"  # lanray-tui's own tables: never the owner's chain to fix
CAP_NET_ADMIN = 12  # linux/capability.h
TIMEOUT_S = 10.0

NOT_INSTALLED = "nft is not installed (the nftables package)"
NOT_PERMITTED = "no permission to change the firewall (needs root or CAP_NET_ADMIN)"


def _run(argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); -1 and the reason when ``nft`` did not run."""
    try:
        p = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return -1, "", NOT_INSTALLED
    except PermissionError:
        return -1, "", f"{argv[0]} cannot be run (permission denied)"
    except OSError as exc:
        return -1, "", f"{argv[0]} cannot be run: {exc}"
    except subprocess.TimeoutExpired:
        return -1, "", f"nft took more than {TIMEOUT_S:.0f} s"
    return p.returncode, p.stdout, p.stderr


def why_failed(stderr: str) -> str:
    """One line for what ``nft`` printed when it failed."""
    if "Operation not permitted" in stderr or "Permission denied" in stderr:
        return NOT_PERMITTED
    if "Protocol not supported" in stderr:
        return "this kernel has no nftables (nf_tables)"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return f"nft failed: {lines[0]}" if lines else "nft failed"


# ----- our own table -------------------------------------------------------------------------


def input_guard(
    table: str, ports: Sequence[int], admit: Mapping[str, Sequence[int]] | None = None
) -> list[str]:
    """The ``nft`` commands for table ``table``: TCP to ``ports`` that did not arrive on
    loopback is answered with a TCP reset, except from each address in ``admit`` to its
    ports. Traffic a host sends to its own addresses arrives on ``lo``, so the node itself
    still connects, by any of its addresses. The table is replaced whole: applied again, the
    commands leave exactly these rules.

    A reset rather than a silent drop: a peer fails at once, as at a closed port, instead of
    waiting out a connect timeout; a drop would hide nothing that a reset shows.
    """
    t = f"{FAMILY} {table}"
    out = [
        f"add table {t}",
        f"delete table {t}",  # the two first make the replacement work whether or not it exists
        f"add table {t}",
        # before the usual filter chains (priority 0): a reset here is final whatever they say
        f"add chain {t} input {{ type filter hook input priority -10; policy accept; }}",
    ]
    for address, allowed in sorted((admit or {}).items()):
        out.append(f"add rule {t} input ip saddr {address} tcp dport {_set(allowed)} accept")
    out.append(f'add rule {t} input iifname != "lo" tcp dport {_set(ports)} reject with tcp reset')
    return out


def _set(ports: Sequence[int]) -> str:
    items = sorted(set(ports))
    return str(items[0]) if len(items) == 1 else "{ " + ", ".join(map(str, items)) + " }"


def command_line(commands: Sequence[str]) -> str:
    """The commands as one line a person can paste (as root)."""
    return "sudo nft '" + "; ".join(commands) + "'"


def apply(commands: Sequence[str]) -> str:
    """Run ``commands`` as one transaction (all or nothing); "" when done, else why not."""
    code, _, err = _run(["nft", "-f", "-"], "\n".join(commands) + "\n")
    if code == 0:
        return ""
    return err if code < 0 else why_failed(err)


def remove(table: str) -> str:
    """Delete table ``table`` if it exists; "" when it is gone, else why not."""
    code, _, err = _run(["nft", "delete", "table", FAMILY, table])
    if code == 0 or "No such file or directory" in err:
        return ""
    return err if code < 0 else why_failed(err)


def exists(table: str) -> bool | None:
    """Whether table ``table`` is in the ruleset; None when that cannot be read."""
    code, _, err = _run(["nft", "list", "table", FAMILY, table])
    if code == 0:
        return True
    return False if code > 0 and "No such file or directory" in err else None


def permission() -> str:
    """Why this process could not change the ruleset ("" when it could), without changing
    anything: ``nft`` on the PATH and CAP_NET_ADMIN in this process's effective set."""
    if shutil.which("nft") is None:
        return NOT_INSTALLED
    return "" if has_capability(CAP_NET_ADMIN) else NOT_PERMITTED


def has_capability(bit: int) -> bool:
    """Whether capability ``bit`` is in this process's effective set (``CapEff``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


# ----- reading the ruleset (the doctor's fix lines) ------------------------------------------


def input_chain_in_use() -> tuple[str, str]:
    """This machine's input chain as ("FAMILY TABLE", "CHAIN") (see :func:`input_chain`);
    ("inet filter", "input") when the ruleset cannot be read."""
    code, out, _ = _run(["nft", "-j", "list", "ruleset"])
    if code != 0:
        return "inet filter", "input"
    try:
        return input_chain(json.loads(out))
    except ValueError:
        return "inet filter", "input"


def input_chain(ruleset: object) -> tuple[str, str]:
    """From ``nft -j list ruleset``: the base chain on the input hook that drops something
    (else the first one), as ("FAMILY TABLE", "CHAIN"); ("inet filter", "input") when none.
    lanray-tui's own tables (named ``lanray_*``) are not the owner's: a rule added there
    would go when the table does."""
    items = ruleset.get("nftables", []) if isinstance(ruleset, dict) else []
    chains: list[tuple[str, str, str]] = []
    dropping: set[tuple[str, str, str]] = set()
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        c, r = item.get("chain"), item.get("rule")
        if any(isinstance(x, dict) and str(x.get("table")).startswith(OWN_PREFIX) for x in (c, r)):
            continue
        if isinstance(c, dict) and c.get("hook") == "input" and c.get("family") in ("inet", "ip"):
            key = (str(c.get("family")), str(c.get("table")), str(c.get("name")))
            chains.append(key)
            if c.get("policy") == "drop":
                dropping.add(key)
        if isinstance(r, dict):
            text = json.dumps(r.get("expr", []))
            if '"drop"' in text or '"reject"' in text:
                dropping.add((str(r.get("family")), str(r.get("table")), str(r.get("chain"))))
    for key in chains:
        if key in dropping:
            return f"{key[0]} {key[1]}", key[2]
    if chains:
        return f"{chains[0][0]} {chains[0][1]}", chains[0][2]
    return "inet filter", "input"
