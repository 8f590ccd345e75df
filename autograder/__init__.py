"""Auto-graded CNN-on-MNIST lab: release with nbgrader, grade in a sandbox, judge outside it."""
