"""Reading and writing frames: clear errors on bad input, atomic writes, inputs never touched."""
