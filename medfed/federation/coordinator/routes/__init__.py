"""The coordinator API's routes, one module per group (each builds an ``APIRouter``).

``health`` (the one open route), ``work`` (a node's long-poll and approvals), ``blobs`` (task
files, downloads and chunked uploads), ``replies`` (a node's answer to its task), ``secagg``
(the peers' certificates, and what a reply may carry), ``jobs`` (a researcher's jobs) and
``admin`` (revocation, participants, audit). Each module's ``router(ctx)`` takes the
:class:`~medfed.federation.coordinator.routes.context.ApiContext` that
:func:`~medfed.federation.coordinator.app.create_app` builds: nothing is shared through module
globals, and nothing happens at import.
"""
