"""A real federation over the network: coordinator, hospital nodes, provisioning, governance.

::

    researcher ──signed HTTPS──► coordinator ◄──signed HTTPS (outbound long-poll)── node
                                 app (FastAPI on uvicorn)              agent: a SiteRuntime
                                 store (SQLAlchemy)                    steward's task approval
                                 blobs (content-addressed)             egress ledger (hash chain)
                                 jobs: RoundDriver + RemoteBackend     outbox (replies on disk)

Sub-packages, one per box (imports point downwards: ``doctor`` → ``coordinator`` | ``node``
→ ``transfer`` → ``identity``; the coordinator and the node never import each other):

- :mod:`.identity` — the federation CA and startup kits (``pki``, ``kits``), per-request
  signatures (``signing``), the participants' certificates (``certificates``);
- :mod:`.transfer` — the signed HTTPS client (``client``) and chunked, resumable,
  hash-checked transfers (``chunks``);
- :mod:`.coordinator` — the HTTP API (``app`` composed from the ``routes`` package; ``auth``,
  ``checks``, ``models``, ``access``, ``views``), its state (``store``, ``schema``, ``blobs``),
  and the jobs it drives (``job_config``, ``jobs``, ``remote_backend``; ``server`` runs it all);
- :mod:`.node` — the hospital's agent (``agent``), its checks of the coordinator's input
  (``checks``), its update protection (``privacy``), its ``outbox`` and ``state_lock``;
- :mod:`.doctor` — ``medfed doctor``: is this machine ready to talk to its federation?
"""
