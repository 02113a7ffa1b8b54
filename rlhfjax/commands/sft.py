"""`rlhfjax sft`: supervised fine-tuning on demonstrations (recipes/sft.py)."""

from rlhfjax.commands import Command, register

register(Command(name="sft", help="supervised fine-tuning on (prompt, response) demonstrations"))
