"""Auto-graded PyTorch labs for a course (this one: MNIST with an MLP and a CNN): release with nbgrader, grade in a
sandbox, judge outside it. The engine names no lab; each lab is a folder of the course (README, "How to add a lab")."""

# The kit's version, as pyproject.toml has it (a test keeps the two equal). Every result records it
# (results.Fingerprint): raise it when a change to the kit would grade the same notebook differently.
__version__ = "0.1.0"
