"""The composer wing: everything that imports composer lives here (the train entry, the
composer model, callbacks, the builders of composer's parts, the save folder's lifecycle,
loggers/callbacks/algorithms named in yaml). The model, gates, Lagrangian, domain sampler
and config schema outside it import no composer, so another engine could host them
(docs/stack.md)."""
