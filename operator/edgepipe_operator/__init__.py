"""The edgepipe kopf operator: Pipelines become engines, Publishes become OCI artifacts.

It lives in ``operator/edgepipe_operator`` and is imported as ``edgepipe_operator``: the
``operator/`` folder itself is not a package, so it can never shadow the standard
library's ``operator`` module, even when Python runs from the repo root.
"""
