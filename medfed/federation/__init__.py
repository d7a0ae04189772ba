"""A real federation over the network: coordinator, hospital nodes, provisioning, governance.

::

    researcher ──signed HTTPS──► coordinator ◄──signed HTTPS (outbound long-poll)── node
                                 API (FastAPI on uvicorn)              SiteRuntime, as simulated
                                 store (SQLAlchemy)                    steward's task approval
                                 blobs (content-addressed)             egress ledger (hash chain)
                                 job runner: RoundDriver + RemoteBackend

Modules: ``pki`` (federation CA, startup kits), ``signing`` (per-request signatures),
``store`` and ``blobs`` (coordinator state), ``remote_backend`` (the round driver's backend
over the store), ``api`` (HTTP surface), ``client`` and ``transfer`` (signed requests; chunked,
resumable, hash-checked transfers that fail only when stalled), ``node`` and ``outbox`` (the
hospital's agent, and the reply waiting on its disk).
"""
