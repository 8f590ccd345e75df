"""Parts 3-5: the device switch, the training loop, evaluation, and the accuracy of the trained weights: the
standard checks (labkit/checks.py), graded with this lab's points. Listed in the order the reports show them."""

from labkit.checks import (check_cpu, check_gpu, check_fallback, check_batches_moved, check_runs,  # noqa: F401, I001
                           check_train_mode, check_steps, check_loss_falls, check_returns_mean, check_evaluate_returns,
                           check_evaluate_value, check_eval_mode, check_no_grad, check_accuracy)
