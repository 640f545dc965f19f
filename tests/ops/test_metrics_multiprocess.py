"""/metrics under gunicorn with several workers: PROMETHEUS_MULTIPROC_DIR adds every process up."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.api.auth import api_key_create
from tests.support.services import (
    BIN,
    ROOT,
    free_port,
    platform_env,
    stop_process,
    transactional_db,
    wait_for_port,
)

pytestmark = transactional_db


def succeeded_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "comms_tasks_total" and sample.labels == {
                "type": "diagnostic.echo", "channel": "system", "status": "succeeded",
            }:  # fmt: skip
                return sample.value
    return 0.0


def test_counters_of_every_gunicorn_worker_are_added_up(tmp_path):
    port = free_port()
    env = platform_env(
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
        METRICS_TOKEN="m-token",
    )
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "comms_platform.wsgi:application", "--config", "python:comms_platform.gunicorn_conf",
         "-b", f"127.0.0.1:{port}", "-w", "3", "--worker-class", "sync"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, proc=proc)
        base = f"http://127.0.0.1:{port}"
        key = api_key_create(name="metrics-mp")[1]
        headers = {"Authorization": f"Api-Key {key}", "Connection": "close"}

        def echo(i: int) -> None:
            # A new connection each time, so the requests spread over the workers.
            response = requests.post(
                f"{base}/api/tasks/", json={"type": "diagnostic.echo", "payload": {"i": i}},
                headers=headers, timeout=10,
            )  # fmt: skip
            assert response.status_code == 201, response.text

        # Sync workers take one request at a time: rounds of concurrent requests reach more
        # than one of them (one idle worker may win every accept of a sequential loop).
        sent = 0
        with ThreadPoolExecutor(max_workers=6) as pool:
            for _ in range(20):
                list(pool.map(echo, range(sent, sent + 6)))
                sent += 6
                if sent >= 12 and len(list(tmp_path.glob("counter_*.db"))) >= 2:
                    break
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
        counts = set()
        for _ in range(6):
            response = requests.get(
                f"{base}/metrics",
                headers={"Authorization": "Bearer m-token", "Connection": "close"},
                timeout=10,
            )
            assert response.status_code == 200
            counts.add(succeeded_count(response.text))
        assert counts == {float(sent)}
        assert len(list(tmp_path.glob("counter_*.db"))) >= 2  # more than one process counted
    finally:
        stop_process(proc)
