"""Tasks: collections of executions of one step, most often a hyperparameter search.

- spec.py: what a task is (TaskSpec), as stored in its row;
- definition.py: a valohai.yaml task or an API body checked into a TaskSpec, and one child's parameters;
- search.py: which children a spec stands for (grids, random draws, optuna's TPE, median stopping): pure;
- summary.py: what a task's children tell (counts, the best child, what median stopping saved);
- engine.py: TaskEngine, which moves every active task on, once per daemon pass;
- create.py: create_task, which the CLI and the API share.
"""
