"""Pictures of a run and a model for people: the report page, the loss plot, and what the
units of a network respond to (introspect)."""
