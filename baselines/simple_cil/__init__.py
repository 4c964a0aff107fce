"""SimpleCIL: the frozen pretrained backbone with a class-mean prototype classifier."""
