"""The ``bulkchange`` command line: the composition root that wires intake, the store, the pipeline,
the simulators and the local deployment together (so it lives outside all of them).

One module per group of commands: ``submit`` (submit, dry-run), ``status`` (status, results,
history), ``operations`` (cancel, retry-failed, resume), ``approvals`` (approve, reject, approval-policy),
``submissions`` (the ``submission`` group: a request split by carrier), ``admin`` (init-db, seed-demo, api-key,
tenant, rebuild-status), ``serve`` (serve, simulate, demo) and ``deploy_local`` (sync-pools,
deploy-local). What they share (click types, options, errors) is in ``_common``, the Rich
rendering in ``render``. A new command goes in the module of its group and in its ``COMMANDS``.
"""

from __future__ import annotations

import click

from . import (
    admin,
    approvals,
    deploy_local,
    drops,
    notifications,
    operations,
    serve,
    status,
    submissions,
    submit,
)


@click.group()
@click.version_option(package_name="bulkchange_pipeline")
def main() -> None:
    """Bulk changes to cellular IoT devices across carrier APIs."""


for _module in (admin, submit, status, operations, approvals, submissions, serve, deploy_local, notifications, drops):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
