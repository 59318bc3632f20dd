"""The eval client: ``calbench eval`` and ``calbench tasks``.

``evaluate`` runs a model on tasks through lm-evaluation-harness (``options`` holds its flags and
their checks; ``manifest`` what a run folder's manifest records; ``run_task`` one task's lm-eval
call and written files; ``harness`` bridges the task plugins in ``calbench/tasks/`` to core's
prompts and response contract; ``registry`` finds the plugins; ``backends`` build the lm-eval
model; ``elicit`` runs the second pass of multi-request elicitations; ``runfolder`` names, locks
and checks run folders). Imports core only.
"""
