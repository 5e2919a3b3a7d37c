"""The measurement engine: everything that takes one Config to one Result.

``measure`` (Config -> Result) prepares a model for one setting (``preparation``, through the
PyTorch ``backends`` or the deployment ``runtimes``), times it (``timing``; the offline and server
``scenarios`` driven by ``serve``, their rate found by ``peak``), scores it on labelled images
(``evaluate``), counts its FLOPs and bytes (``flops``) against the device's measured ceilings
(``probes``), reads its energy and clocks (``power``) and its device and memory (``devices``).

The tools (sweep, profile, train, layerstats, report) sit above the engine, the models below it.
Its ground (``timing``, ``power``, ``backends``, ``scenarios``) imports nothing above it; the shared
vocabulary (``settings``, ``datamodel``) builds on that ground, and the rest of the engine on both.
Users import ``resbench.measure``, which hands on ``engine.measure``'s names.
"""
