"""``gateway demo``: a simulated factory, the gateway, the cloud and a subscriber, live.

``app`` runs the processes and the view, ``scratch`` keeps every write in the demo's own folder,
``ports`` checks the port block before anything starts, ``screen`` draws the terminal or the plain
event lines. Importing this package stays cheap: ``gateway --help`` reads the demo's options.
"""

from __future__ import annotations

import argparse


def run_demo(args: argparse.Namespace) -> int:
    from gateway.demo.app import run_demo as run

    return run(args)


__all__ = ["run_demo"]
