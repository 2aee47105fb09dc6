"""`isobench fleet`: the same matrix on many hosts through Ansible.

inventory (the hosts an Ansible inventory and --limit name) -> wheelhouse (this isobench
and its dependencies as wheels, built here) -> ansible_run (ansible-playbook with the
shipped playbook.yml, its events read as they come) -> events (each host's state from
them) -> results (results/fleet-<id>/fleet.json and one run directory per host).
On a host, remote.py starts the run and hostside.py handles the scratch directory.

ansible-core is the optional extra `isobench[fleet]`: `available()` says whether it can
be imported, and the command says what to install when it cannot."""

from __future__ import annotations

INSTALL_HINT = "fleet needs ansible-core: pip install 'isobench[fleet]'"


def available() -> bool:
    """Whether ansible-core can be imported by this Python (the playbook runs as
    `python -m ansible.cli.playbook`, so the same interpreter must have it)."""
    try:
        import ansible.cli  # noqa: F401
    except Exception:  # ImportError, or an ansible that breaks on import
        return False
    return True
