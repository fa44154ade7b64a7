"""The Ray session of a search: join a cluster or start a local Ray (with its dashboard), and check
that the cluster can hold a trial before any starts."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from rspose_tune._resources import ResourceError, check_feasible, rank_bundle
from rspose_tune.search._parser import SearchOptions
from rspose_tune.search._plan import Plan, SearchError, check_reachable

__all__ = ["check_reachable", "start_ray"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_ray(p: Plan, options: SearchOptions):
    """Join the cluster at ``p.address``, or start a fresh local Ray with a loopback-only dashboard.

    Without an address, ``address="local"``: Ray would otherwise join whatever cluster
    ``ray start`` last recorded on this machine (``<RAY_TMPDIR or /tmp>/ray/ray_current_cluster``),
    even a dead one.
    """
    import ray

    if p.address:  # its form and that it answers: checked with the plan (check_reachable)
        try:
            return ray.init(address=p.address, log_to_driver=options.verbose > 1)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SearchError(f"--address {p.address!r}: cannot join the Ray cluster ({exc})") from exc
    if not options.no_dashboard and not _is_loopback(options.dashboard_host):
        print(
            f"WARNING: the Ray dashboard will listen on {options.dashboard_host}, not loopback. Ray's job "
            "API runs any code it is sent (CVE-2023-48022); keep token authentication on and the "
            "port firewalled.",
            file=sys.stderr,
        )
    return ray.init(
        address="local",
        num_cpus=options.num_cpus,
        include_dashboard=not options.no_dashboard,
        dashboard_host=options.dashboard_host,
        dashboard_port=options.dashboard_port,
        log_to_driver=options.verbose > 1,
    )


def _print_dashboard(context) -> None:
    url = getattr(context, "dashboard_url", None)
    if not url:
        return
    url = url if url.startswith("http") else f"http://{url}"
    print(f"Ray dashboard: {url}")
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_MODE", "token") != "disabled":
        print(
            f"  token authentication is on: the dashboard asks for the token in {token_file} "
            "(print it with `ray get-auth-token`); API clients send `Authorization: Bearer <token>`."
        )


def _check_cluster_can_hold_a_trial(p: Plan) -> None:
    """Refuse, before any trial starts, resources that fit no node (Ray would wait forever)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    try:
        check_feasible(rank_bundle(p.workers, p.cpus, p.gpus), p.workers, nodes)
    except ResourceError as exc:
        raise SearchError(str(exc)) from None
