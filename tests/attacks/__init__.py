"""The attacker's cases, one module per hostile party: each test fails if a hole reopens.

- ``test_site_vs_coordinator``: a hostile site against the coordinator and the model.
- ``test_researcher_vs_coordinator``: a hostile researcher's job submissions and requests.
- ``test_researcher_vs_node``: a hostile researcher's text and settings reaching a node.
- ``test_coordinator_vs_node``: a hostile coordinator towards a node.
"""
