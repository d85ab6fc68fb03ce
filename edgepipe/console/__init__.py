"""``edgepipe console``: a local web page of the fleet (Pipelines, Publishes, their rollouts
and edges), served on 127.0.0.1 from plain files with uPlot vendored (no build step)."""
