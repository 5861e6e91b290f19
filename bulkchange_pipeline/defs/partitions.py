"""One dynamic partition per bulk change; the key is the bulk change id.

Every run of a bulk change partition carries the same ``bulkchange/*`` tags, however it is
launched (sensor, launchpad, re-execution, backfill, CLI): Dagster asks ``partition_tags`` for
the tags of a partition key, and they are derived from the stored bulk change. The run queue
keys on ``bulkchange/carrier_account`` (one run at a time per carrier account: per credentials
entry, ``tags.account_tag_value``), so a run started
from the UI waits behind an earlier submission on the same account instead of overtaking it.
"""

from collections.abc import Mapping

import dagster as dg

from ..domain.enums import change_type_name
from ..store.bulk_changes import queued_bulk_change
from .tags import bulk_change_tags

__all__ = ["bulk_change_config", "bulk_change_partitions", "partition_tags", "use_database"]

bulk_change_partitions = dg.DynamicPartitionsDefinition(name="bulk_change")

_database: list = []  # the code location's DatabaseResource, set by ``build_definitions``


def use_database(database: object) -> None:
    """Read partition tags from this ``DatabaseResource`` (the one the jobs' steps use). Dagster
    asks for tags without resources, so ``build_definitions`` registers its database here; a
    process serves one code location, so there is one."""
    _database[:] = [database]


def partition_tags(partition_key: str) -> Mapping[str, str]:
    """The ``bulkchange/*`` tags of a bulk change's runs, read from the business database. A key
    that names no stored bulk change is refused: no run can be launched for it."""
    from .resources import DatabaseResource  # resources import the carrier layer; keep this module light

    if not partition_key.isdigit():
        raise dg.DagsterInvalidConfigError(f"partition key {partition_key!r} is not a bulk change id", [], None)
    database = _database[0] if _database else DatabaseResource()
    bc = queued_bulk_change(database.engine(), int(partition_key))
    if bc is None:
        raise dg.DagsterInvalidConfigError(f"bulk change {partition_key} does not exist (or was archived)", [], None)
    return bulk_change_tags(
        bc.id,
        bc.tenant_id,
        bc.credentials_name,
        bc.change_type,
        tenant_name=bc.tenant_name,
        account_name=bc.account_name,
        change_type_name=change_type_name(bc.change_type),
    )


bulk_change_config = dg.PartitionedConfig(
    partitions_def=bulk_change_partitions,
    run_config_for_partition_key_fn=lambda _key: {},
    tags_for_partition_key_fn=partition_tags,
)
"""The jobs' config: no run config per partition (launchpad options have defaults), tags per
partition from the stored bulk change."""
