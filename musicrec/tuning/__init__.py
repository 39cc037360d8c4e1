"""Hyperparameter search: Optuna studies per model (search.py), one trial's fit (trial.py), the stored
tuning/<model>.json records that training starts from (records.py, which imports neither Optuna nor torch)."""
