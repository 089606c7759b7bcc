"""Recording and import: eval sets, cassettes of provider traffic, public datasets, logged outputs.

``evalset`` (the eval-set format), ``cassettes`` (record with vcrpy, replay
through the real router), ``datasets`` (the registry of public model outputs:
fetch and verify), ``importers`` (logged outputs -> eval set + cassettes),
``paths`` (workspace, cache and mirror folders). These modules depend on the
production package, never on the workbench.
"""
