"""Leakage audits: real attacks that show whether medfed's privacy protections hold.

- :mod:`~medfed.audit.leakage` — gradient inversion of a site's update (analytic on a first
  linear layer, optimisation-based on images), raw vs. what the coordinator sees under
  secure aggregation and client-level DP (``medfed audit leakage``);
- :mod:`~medfed.audit.membership` — loss-threshold membership inference on a trained model,
  without and with DP-SGD (``medfed audit membership``);
- :mod:`~medfed.audit.similarity` — how much of a record a reconstruction recovered, and the
  thresholds for "reconstructed";
- :mod:`~medfed.audit.report` — results, verdicts (pass / fail / inconclusive), JSON.

torch is imported only when an audit runs.
"""
