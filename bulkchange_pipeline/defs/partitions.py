"""One dynamic partition per bulk change; the key is the bulk change id."""

import dagster as dg

bulk_change_partitions = dg.DynamicPartitionsDefinition(name="bulk_change")
