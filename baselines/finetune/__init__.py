"""Finetune: the lower-bound reference row, trained experience after experience with no continual-learning mechanism."""
