"""Standard parts for labs that train a classifier under the grader's budget, kept apart from the engine.

A lab is a plug-in folder (README, "How to add a lab"); a lab whose students write the usual
`get_device(use_gpu)`, `train_one_epoch(model, loader, optimizer, device)` and `evaluate(model, loader, device)`
and a network class uses these instead of writing its own:

- `labkit.steps` runs inside the sandbox (the lab's config lists it in `runtime_modules`, and the engine ships
  its source with the plan): the steps that call those functions and the network on the plan's probes.
- `labkit.checks` holds the hidden checks that judge what those steps observed; a lab's hidden/checks_*.py
  imports the ones it grades (pytest collects imported checks like its own).

The engine (autograder/) names no lab and no graded function; these modules name the functions of this one
contract, and a lab that wants another contract writes its own steps and checks.
"""
