"""Central read of edge inference logs: every edge's uploaded segments as one table.

Segments are read from ``<prefix>/logs/<pipeline>/<edge>`` on the publish registry; the
``edge`` column names where each record was made (like Wallaroo's ``metadata.partition``).
A record is in exactly one segment, and a segment is stored once (its tag comes from its
content); ids are still checked, so that a table never shows a record twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from edgepipe import edgelog, oci

if TYPE_CHECKING:
    import pandas as pd


def read_logs(
    target: oci.Target,
    pipeline: str,
    *,
    edge: str | None = None,
    since: str | datetime | None = None,
) -> pa.Table:
    """Every uploaded record of ``pipeline`` (one edge's with ``edge``), from ``since`` on,
    oldest first."""
    client = target.client()
    floor = edgelog.since_ms(since)
    names = [edge] if edge else edgelog.edges(client, target.prefix, pipeline)
    tables = []
    for name in names:
        repo = edgelog.repository(target.prefix, pipeline, name)
        for segment in edgelog.segments(client, repo, floor):
            data = edgelog.fetch_segment(client, repo, segment)
            tables.append(pa.ipc.open_file(pa.BufferReader(data)).read_all())
    if not tables:
        _check_published(client, target, pipeline)
        return edgelog.arrow_schema().empty_table()
    table = pa.concat_tables(tables, promote_options="default")
    table = edgelog.from_time(table, floor).sort_by([("time", "ascending"), ("id", "ascending")])
    _, first = np.unique(table.column("id").to_numpy(zero_copy_only=False), return_index=True)
    if len(first) != table.num_rows:
        table = table.take(pa.array(np.sort(first)))
    return table


def _check_published(client: oci.Client, target: oci.Target, pipeline: str) -> None:
    """No logs: fine for a published pipeline (no uploads yet), a mistake for a name that
    was never published there (a typo, the wrong registry or prefix), which raises."""
    try:
        client.tags(target.repository("pipelines", pipeline))
        return
    except oci.NotInRegistry:
        pass
    where = "/".join(p for p in (target.registry, target.prefix) if p)
    head = target.repository("pipelines", "") + "/"
    published = sorted(r[len(head) :] for r in client.repositories() if r.startswith(head))
    raise oci.NotInRegistry(
        f"pipeline {pipeline!r} was never published to {where} (no {head}{pipeline} there); "
        + (
            f"published there: {', '.join(published)}"
            if published
            else "nothing is published there"
        )
    )


def logs_dataframe(
    target: oci.Target,
    pipeline: str,
    *,
    edge: str | None = None,
    since: str | datetime | None = None,
) -> pd.DataFrame:
    """``read_logs`` as a pandas DataFrame: ``time`` as UTC timestamps, ``outputs`` (and
    ``inputs``) as dicts of numpy arrays by name."""
    table = read_logs(target, pipeline, edge=edge, since=since)
    df = table.drop_columns(["outputs", "inputs"]).to_pandas()
    for key in ("outputs", "inputs"):
        df[key] = [edgelog.to_arrays(v) for v in table.column(key).to_pylist()]
    return df
