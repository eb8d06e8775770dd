"""Work queues: one live queue and one backfill queue per site, live served first.

A worker of the pool (started without `--work-queue`) takes runs from the queues in priority
order, lowest number first: the default queue (by-hand runs), then every site's live queue
(`site-<site>`), then every site's backfill queue (`site-<site>-backfill`). So an hour that
is due never waits behind a backlog of missed hours, and an operator can pause one site's
queue (`prefect work-queue pause site-depot-a --pool nvrflow-local`) or give a machine to one
site (`prefect worker start --pool nvrflow-local --work-queue site-depot-a`).

Prefect keeps a pool's priorities distinct and in sequence, shifting queues down to make
room: a new live queue is put just after the last live one (the backfill queues move down),
a new backfill queue at the end. A queue that exists is left where it is: an order or a
limit set in the UI stays.
"""

from __future__ import annotations

import re

from prefect.client.orchestration import get_client

_UNSAFE = re.compile(r"[^a-z0-9]+")


def site_queue(site: str) -> str:
    """The live queue of a site (`site-none` for recorders without one)."""
    return "site-" + (_UNSAFE.sub("-", site.lower()).strip("-") or "none")


def backfill_queue(site: str) -> str:
    return site_queue(site) + "-backfill"


def ensure_site_queues(pool: str, sites: set[str]) -> list[str]:
    """Create the live and backfill queues of each site that lacks them; returns what was made."""
    made = []
    with get_client(sync_client=True) as client:
        for site in sorted(sites):
            queues = {q.name: q.priority for q in client.read_work_queues(work_pool_name=pool)}
            live = site_queue(site)
            if live not in queues:
                # Just after the default queue and the live queues: before every backfill queue.
                ahead = [p for name, p in queues.items() if not name.endswith("-backfill")]
                priority = max(ahead, default=0) + 1
                client.create_work_queue(name=live, work_pool_name=pool, priority=priority)
                made.append(f"work queue {live} created (priority {priority})")
            if backfill_queue(site) not in queues:
                client.create_work_queue(name=backfill_queue(site), work_pool_name=pool)  # at the end
                made.append(f"work queue {backfill_queue(site)} created")
    return made
