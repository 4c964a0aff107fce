"""Joint: the upper-bound reference row, all classes trained at once."""
