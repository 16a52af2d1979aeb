"""What a search request must pass before any work or write: its config values, where it writes, its budget."""

from __future__ import annotations

from omegaconf import DictConfig

from psvit.errors import ConfigError


def check_request(cfg: DictConfig) -> float | None:
    """Validate budget, sampler, trial count and constraints, then the cache, MLflow and Optuna stores, then
    the enabled groups and that the budget is reachable at all (from the config and the data, nothing trained);
    returns the budget."""
    from psvit.allocation import check_budget_value
    from psvit.cli import check_pruning_plan
    from psvit.preflight import check_outputs
    from psvit.search.fidelity import Fidelity
    from psvit.search.samplers import SEARCH_SAMPLERS, STRATEGY_SAMPLERS
    from psvit.workflow import compute_of, plan

    budget = cfg.get("budget")
    if budget is not None:
        budget = check_budget_value(budget)
    if cfg.search.sampler not in SEARCH_SAMPLERS + STRATEGY_SAMPLERS:
        raise ConfigError(f"search.sampler must be one of {', '.join(SEARCH_SAMPLERS + STRATEGY_SAMPLERS)}, "
                          f"got {cfg.search.sampler!r}")
    n_trials = cfg.search.n_trials
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"search.n_trials must be a positive integer, got {n_trials!r}")
    Fidelity(float(cfg.search.fidelity.subset), float(cfg.search.fidelity.promote))
    name = cfg.search.get("register_model")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"search.register_model must be null or a model name, got {name!r}")
        if not (cfg.search.finalize and cfg.search.export):
            raise ConfigError("search.register_model needs search.finalize=true and search.export=true (it registers "
                              "the chosen model's MLflow Model)")
    compute_of(cfg)
    plan(cfg)
    check_outputs(cfg)
    check_pruning_plan(cfg, budget)
    return budget
