"""One module per studio tab; each has `build(ctx)` that lays out the tab and wires its events."""
