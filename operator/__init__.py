"""The edgepipe kopf operator (imported as ``edgepipe.operator``, never as ``operator``)."""
