"""witness-watcher: watches a witness's missed blocks and asks the signer for a failover.

Holds no chain key (T1). Modules: ``config`` (watcher.toml, the only reader of the
environment), ``core`` (pure decisions), ``schedule`` (pure slot timing),
``reader`` (RPC nodes), ``signer_client`` (signed requests, verified answers),
``state`` (the atomic state file), ``daemon`` (the loop), ``metrics``, ``app``
(composition), ``report`` (status and check) and ``cli`` (``witness-watcher``).
"""
