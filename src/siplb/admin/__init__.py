"""The admin server (docs/design.md section 2): JSON API under ``/api/``, the live dashboard at ``/``
and Prometheus metrics at ``/metrics``, in the balancer's own event loop.

``Balancer(config, admin=True)`` starts ``AdminServer`` on ``[admin] listen``; ``siplb status``,
``siplb dest ...`` and ``siplb reload`` talk to it through ``siplb.admin.client``.
"""
