"""One Optuna study per model: TPE (seeded) proposes, a median pruner stops bad trials on their epoch
validation value (RMSE for rating models, minimised; NDCG@10 for retrieval models, maximised). The study lives
in a journal file under the run's folder (no pickles); trials are asked in batches so that the caller can run
a batch in parallel (as task runs) and tell the results in trial order."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from musicrec.fit.space import Dim
from musicrec.registry import FAMILIES, family_of, parse_config, search_space

STATES = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


@dataclass(frozen=True)
class TrialSpec:
    """What a trial task needs: the model, the proposed hyperparameters and where to report epochs."""

    model: str
    number: int
    trial_id: int
    params: dict[str, Any]
    journal: str
    deadline: float  # time.time() after which the trial stops at its next epoch (the budget ran out)
    startup: int = 3  # trials before the pruner (and TPE) act: a task rebuilds the study's pruner from it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_study(journal: str | Path, model: str, seed: int, trials: int) -> optuna.Study:
    """Create or reopen the model's study in a journal file; sampler and pruner seeded, sized to the run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(journal).parent.mkdir(parents=True, exist_ok=True)
    startup = startup_trials(trials)
    return optuna.create_study(
        storage=JournalStorage(JournalFileBackend(str(journal))),
        study_name=model,
        direction=direction(model),
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        pruner=_pruner(startup),
        load_if_exists=True,
    )


def direction(model: str) -> str:
    """ "maximize" for a family whose metric rises as it gets better, else "minimize"."""
    return "maximize" if FAMILIES[family_of(model)].bigger_is_better else "minimize"


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the space, and finished trials before the pruner compares."""
    return min(10, max(3, trials // 3))


def _pruner(startup: int) -> optuna.pruners.BasePruner:
    # the running best is reported, so a trial is stopped only when even its best is behind the median
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=2)


def load_trial(spec: TrialSpec) -> optuna.Trial:
    """A spec's running trial, from any process that can read the journal file, with the study's pruner."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(spec.journal))
    study = optuna.load_study(study_name=spec.model, storage=storage, pruner=_pruner(spec.startup))
    return optuna.trial.Trial(study, spec.trial_id)


def suggest(trial: optuna.Trial, space: dict[str, Dim]) -> dict[str, Any]:
    """Hyperparameters for one trial from the family's declared space (lists are offered as JSON text)."""
    params: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.kind == "float":
            params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        elif dim.kind == "int":
            params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            picked = trial.suggest_categorical(name, [_label(c) for c in dim.choices])
            params[name] = json.loads(picked) if isinstance(picked, str) and picked[:1] == "[" else picked
    return params


def _label(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | tuple) else value


def default_params(model: str) -> dict[str, Any]:
    """The family's defaults for the searched keys: trial 0, so every search measures the default too."""
    cfg = parse_config(model).model_dump()
    return {k: _label(cfg[k]) for k in search_space(model)}


def warm_params(model: str, best_params: dict[str, Any] | None) -> dict[str, Any]:
    """A record's best settings as trial parameters: the keys of today's search space only (a key the space
    no longer has is dropped, one it gained is proposed by the sampler)."""
    space = search_space(model)
    return {k: _label(v) for k, v in (best_params or {}).items() if k in space}


def ask_batch(
    study: optuna.Study, journal: str, model: str, size: int, deadline: float, startup: int
) -> list[TrialSpec]:
    specs = []
    for _ in range(size):
        trial = study.ask()
        specs.append(
            TrialSpec(
                model,
                trial.number,
                trial._trial_id,
                suggest(trial, search_space(model)),  # optuna has no public id
                journal,
                deadline,
                startup,
            )
        )
    return specs


def model_budget(per_model: float, remaining: float, spent: list[float]) -> float:
    """The seconds the next model's search may take: its share, capped by what is left of the total; 0 (do
    not start it) when the remaining budget is less than the median that the searches before it took. A
    trial cannot stop inside an epoch, so at a large size a search costs its first epochs whatever its share,
    and starting one the remaining budget cannot cover would overrun the total by about that median."""
    budget = min(per_model, remaining)
    if spent and remaining < sorted(spent)[len(spent) // 2]:
        return 0.0
    return max(0.0, budget)


def run_search(
    journal: str | Path,
    model: str,
    *,
    trials: int,
    parallel: int,
    budget_seconds: float,
    seed: int,
    run_batch: Callable[[list[TrialSpec]], list[dict[str, Any]]],
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    warm_start: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Ask up to `trials` trials, `parallel` at a time, until the budget is spent; `run_batch` runs a batch
    (task runs in the flow, a plain loop in tests and benchmarks) and returns one outcome per spec, which are
    told in trial order, so a seeded search is reproducible. Trial 0 is always the family's default; trial 1
    `warm_start` (the last record's best settings, when they differ from the defaults), so a search again
    after the data changed starts from what was learnt. A model that does not apply to the data (a Skipped
    trial: the reason is the data's shape, not the settings) ends its search at once."""
    study = open_study(journal, model, seed, trials)
    if not study.trials:
        default = default_params(model)
        study.enqueue_trial(default)
        warm = warm_params(model, warm_start)
        if warm and warm != default:
            study.enqueue_trial(warm)
    outcomes: list[dict[str, Any]] = []
    deadline = time.time() + budget_seconds
    while len(outcomes) < trials and time.time() < deadline and not any("skipped" in o for o in outcomes):
        specs = ask_batch(
            study,
            str(journal),
            model,
            min(parallel, trials - len(outcomes)),
            deadline,
            startup_trials(trials),
        )
        for spec, out in sorted(zip(specs, run_batch(specs), strict=False), key=lambda p: p[0].number):
            study.tell(
                spec.number, out["value"] if out["state"] == "complete" else None, state=STATES[out["state"]]
            )
            outcomes.append(out)
            if on_trial:
                on_trial({**out, "trials": trials, "best_value": best_value(outcomes)})
    return outcomes


def best_value(outcomes: list[dict[str, Any]]) -> float | None:
    """The best completed trial's validation value, in its family's direction."""
    done = [o for o in outcomes if o["state"] == "complete"]
    return best_outcome(done)["value"] if done else None


def best_outcome(done: list[dict[str, Any]]) -> dict[str, Any]:
    """The best of completed outcomes (of one model), in its family's direction."""
    pick = max if direction(done[0]["model"]) == "maximize" else min
    return pick(done, key=lambda o: o["value"])
