"""What a newcomer sees in the Prefect UI after a training run, checked in a real browser: a real `prefect
server` (with its UI), one small training run against it, then headless Chromium (Debian's chromium +
chromium-driver, installed by .ci/run) on the flow run's page: the leaderboard with the champion starred and
no cut-off column, the model card, and the learning curves drawn as an image (a base64 data URI the UI must
not strip); and the training deployment's Run form with its models selected."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect_server import REPO, Processes, free_port, server_env, start_server

from musicrec import registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WINDOW = (1920, 1080)  # a common desktop window: the leaderboard must fit it without a horizontal scroll bar
TRAIN = """
import json, sys
from flows.training import TrainingParams, training
state = training(TrainingParams(**json.loads(sys.argv[1])), return_state=True)
print("RUN=" + json.dumps([str(state.state_details.flow_run_id), state.result()["champion"].get("name")]))
"""
REGISTER = """
from deployments.serve import build_deployments
for deployment in build_deployments():
    print(f"DEPLOYMENT={deployment.flow_name}/{deployment.name}={deployment.apply()}")
"""


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real Prefect server with its UI on a free loopback port and a temporary PREFECT_HOME."""
    (tmp_path / "logs").mkdir()
    port = free_port()
    env = server_env(tmp_path / "prefect_home", f"http://127.0.0.1:{port}/api", ui=True)
    procs = Processes(tmp_path / "logs")
    try:
        start_server(procs, env, ui=True)
        yield {"ui": f"http://127.0.0.1:{port}", "env": env, "procs": procs}
    finally:
        procs.stop_all()


def _train(tmp_path: Path, tiny, env: dict[str, str]) -> tuple[str, str]:
    """One small training run (plain gmf, 2 epochs, on 4,000 low-rank ratings) against the server, in a child
    process like a worker's; returns (flow run id, champion)."""
    ratings, _ = tiny
    csv = tmp_path / "ratings.csv"
    ratings[["user_id", "item_id", "rating", "timestamp"]].to_csv(csv, index=False)
    params = {
        "reviews": [str(csv)],
        "models": ["gmf"],
        "overrides": {"gmf": {"epochs": 2}},
        "threads": 1,
        "retrieval_models": [],
        "store_uri": (tmp_path / "store").as_uri(),
        "work_dir": str(tmp_path / "work"),
    }
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, json.dumps(params)],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    run_id, champion = json.loads(done.stdout.split("RUN=")[-1].splitlines()[0])
    assert champion == "gmf", done.stdout[-2000:]
    return run_id, champion


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through chromedriver. A missing browser fails the test: .ci/run installs it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: apt-get install -y chromium chromium-driver (.ci/run does)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, what: str, condition, timeout: float = 60) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: condition(d))
    except TimeoutException:
        body = driver.find_element("tag name", "body").text
        pytest.fail(f"timed out waiting for {what} at {driver.current_url}\n--- page text ---\n{body[:3000]}")


def _visible(driver, xpath: str) -> list[Any]:
    return [e for e in driver.find_elements("xpath", xpath) if e.is_displayed()]


def _open_artifact(driver, run_page: str, key: str) -> None:
    """From the flow run's Artifacts tab, open the artifact card named `key` as a person would."""
    driver.get(run_page)
    tab = _wait(driver, "the Artifacts tab", lambda d: _visible(d, "//li[normalize-space(.)='Artifacts']"))
    tab[0].click()
    card = _wait(
        driver, f"the {key} artifact card", lambda d: _visible(d, f"//*[normalize-space(text())='{key}']")
    )
    card[0].click()
    _wait(driver, f"the {key} artifact page", lambda d: "/artifacts/artifact/" in d.current_url)


def _check_training_form(driver, ui: str, env: dict[str, str]) -> None:
    """Register serve.py's deployments; the training/nightly Run form shows all six models selected (a
    default_factory list without a value there showed "Models: 0 selected")."""
    done = subprocess.run(
        [sys.executable, "-c", REGISTER],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ids = dict(line.split("=")[1:] for line in done.stdout.splitlines() if line.startswith("DEPLOYMENT="))
    driver.get(f"{ui}/deployments/deployment/{ids['training/nightly']}/run")
    field = (
        "//span[text()='Models (Optional)']/ancestor::div[contains(concat(' ', @class, ' '), "
        "' schema-form-property ')][1]//select[option]"
    )
    select = _wait(driver, "the Models field of the training form", lambda d: _visible(d, field))[0]
    chosen = _wait(
        driver,
        "the models selected in the form",
        lambda d: d.execute_script(
            "return [...arguments[0].options].filter(o => o.selected).map(o => o.value)", select
        ),
    )
    assert chosen == registry.names("rating"), chosen  # the form's default: every registered rating model


def _table_row(driver, first_cell: str) -> list[str]:
    cells = _wait(
        driver,
        f"the table row of {first_cell}",
        lambda d: _visible(d, f"//tr[td[1][normalize-space(.)='{first_cell}']]/td"),
    )
    return [c.text.strip() for c in cells]


def test_ui_shows_leaderboard_model_card_learning_curves_and_a_filled_training_form(
    ui_server, browser, tmp_path, tiny
):
    _check_training_form(browser, ui_server["ui"], ui_server["env"])
    run_id, champion = _train(tmp_path, tiny, ui_server["env"])
    run_page = f"{ui_server['ui']}/runs/flow-run/{run_id}"

    _open_artifact(browser, run_page, "leaderboard")
    head = [h.text.strip() for h in _wait(browser, "the leaderboard header", lambda d: _visible(d, "//th"))]
    assert head[:4] == ["model", "kind", "champion", "val_rmse"] and "val_gain_vs_bias" in head, head
    row = dict(zip(head, _table_row(browser, champion), strict=True))
    assert row["champion"] == "★" and row["kind"] == "model" and row["best_epoch"] == "2", row
    assert len(row["val_rmse"].split(".")[1]) == 4 and row["val_gain_vs_bias"].startswith("+"), row
    assert dict(zip(head, _table_row(browser, "bias"), strict=True))["champion"] == ""
    table = browser.find_element("tag name", "table")
    widths = browser.execute_script(
        "return [arguments[0].scrollWidth, arguments[0].parentElement.clientWidth]", table
    )
    assert widths[0] <= widths[1], f"the leaderboard is cut off: {widths[0]} px wide in {widths[1]} px"

    _open_artifact(browser, run_page, "model-card")
    text = _wait(
        browser,
        "the model card",
        lambda d: (
            "Champion: gmf" in d.find_element("tag name", "body").text
            and d.find_element("tag name", "body").text
        ),
    )
    assert "promoted: yes" in text and "best epoch: 2 of 2" in text and "gain over the bias baseline" in text

    _open_artifact(browser, run_page, "learning-curves")
    img = _wait(
        browser,
        "the learning-curves image",
        lambda d: _visible(d, "//img[starts-with(@src, 'data:image/png;base64,')]"),
    )[0]
    size = _wait(
        browser,
        "the image to load",
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img),
    )
    assert size > 100 and img.size["height"] > 50, (size, img.size)
