"""The budget-constrained width search: Optuna inside the app, Hydra for config, MLflow for every trial."""
