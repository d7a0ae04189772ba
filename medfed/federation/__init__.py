"""A real federation over the network: coordinator, hospital nodes, provisioning, governance.

::

    researcher ──(signed HTTPS)──► coordinator ◄──(signed HTTPS, outbound long-poll)── node at each hospital
                                   │  API (FastAPI/uvicorn)                              │ SiteRuntime (same as simulation)
                                   │  store (SQLAlchemy: jobs, rounds, tasks, audit)     │ task approval by the data steward
                                   │  blobs (content-addressed safetensors)              │ egress ledger (hash-chained)
                                   │  job runner: RoundDriver + RemoteBackend            │
                                   ▼                                                     ▼

Modules: ``pki`` (federation CA, startup kits), ``signing`` (per-request signatures),
``store`` and ``blobs`` (coordinator state), ``remote_backend`` (the round driver's backend
over the store), ``api`` (HTTP surface), ``node`` (the hospital's agent).
"""
