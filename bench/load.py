"""Load test: a mixed chat workload for a fixed time, with error rate and latencies.

Virtual users each loop over one step of a chat at a time, chosen by
weight: post a user turn and an assistant turn, search, build context, or
chat through ``POST /v1/chat``. No model is configured, so chat takes the
service's offline path, where the reply shows the context a model would
get. Its latency is the service's own, without a model's. One API process and one
worker process run on 127.0.0.1; requests stop when the time is up.

    python -m bench.load --users 16 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import TYPE_CHECKING, Any

from bench.common import (
    REQUEST_ERRORS,
    CpuMeter,
    ServiceConfig,
    ServiceProcesses,
    ensure_database,
    latency_summary,
    open_session,
    process_rss_mib,
    recorded,
    reset_state,
    service_token,
    synthetic_texts,
    versions,
    write_result,
)

if TYPE_CHECKING:
    import aiohttp

# Step weights of one virtual user: mostly writes and context, as a chat backend does.
WEIGHTS = {"ingest": 4, "context": 3, "search": 2, "chat": 1}


class Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {name: [] for name in WEIGHTS}
        self.errors: dict[str, dict[str, int]] = {name: {} for name in WEIGHTS}

    def add(self, step: str, started: float, outcome: str | None) -> None:
        self.latencies[step].append((time.perf_counter() - started) * 1000)
        if outcome is not None:
            self.errors[step][outcome] = self.errors[step].get(outcome, 0) + 1

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        steps = {}
        for step, values in self.latencies.items():
            failed = sum(self.errors[step].values())
            steps[step] = {
                **latency_summary(values),
                "per_s": round(len(values) / elapsed_s, 1),
                "errors": self.errors[step],
                "error_rate": round(failed / len(values), 4) if values else 0.0,
            }
        total = sum(len(values) for values in self.latencies.values())
        failed = sum(sum(errors.values()) for errors in self.errors.values())
        return {
            "requests": total,
            "requests_per_s": round(total / elapsed_s, 1),
            "error_rate": round(failed / total, 4) if total else 0.0,
            "steps": steps,
        }


async def virtual_user(
    client: aiohttp.ClientSession, number: int, deadline: float, recorder: Recorder
) -> None:
    generator = random.Random(number)
    texts = synthetic_texts(200, seed=number)
    user = f"load-user-{number}"
    session = f"load-session-{number}"
    steps = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    turn = 0
    while time.monotonic() < deadline:
        step = generator.choices(steps, weights)[0]
        text = texts[turn % len(texts)]
        turn += 1
        if step == "ingest":
            path, expected = f"/v1/sessions/{session}/turns", 202
            body: dict[str, Any] = {
                "user_id": user,
                "turns": [
                    {"role": "user", "content": text, "turn_id": f"u{turn}"},
                    {"role": "assistant", "content": texts[turn % 7], "turn_id": f"a{turn}"},
                ],
            }
        elif step == "search":
            path, expected = "/v1/memories/search", 200
            body = {"user_id": user, "query": text}
        elif step == "context":
            path, expected = "/v1/context", 200
            body = {"user_id": user, "session_id": session, "query": text, "token_budget": 1500}
        else:
            path, expected = "/v1/chat", 200
            body = {"user_id": user, "session_id": session, "message": text, "turn_id": f"c{turn}"}
        started = time.perf_counter()
        try:
            async with client.post(path, json=body) as response:
                await response.read()
            outcome = None if response.status == expected else str(response.status)
        except REQUEST_ERRORS as error:
            outcome = type(error).__name__
        recorder.add(step, started, outcome)


async def drive(url: str, token: str, users: int, seconds: float, api_pid: int) -> dict[str, Any]:
    """Run ``users`` virtual users for ``seconds``; return rates, errors and latencies."""
    recorder = Recorder()
    async with open_session(url, token, connections=users) as client:
        cpu = CpuMeter(api_pid)
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(
            *(virtual_user(client, number, deadline, recorder) for number in range(users))
        )
        elapsed = time.monotonic() - started
    return {**recorder.summary(elapsed), "elapsed_s": round(elapsed, 1), "cpu_s": cpu.used()}


def run(config: ServiceConfig, users: int, seconds: float) -> dict[str, Any]:
    ensure_database(config.database_url)
    result: dict[str, Any] = {
        "settings": {"virtual_users": users, "seconds": seconds, "weights": WEIGHTS},
        "versions": versions(config.database_url, config.redis_url),
    }
    with recorded("load", result), ServiceProcesses(config) as service:
        service.start_api()
        reset_state(config.redis_url, config.database_url)
        worker = service.start_worker()
        result["load"] = asyncio.run(
            drive(service.url, service_token(), users, seconds, service.api_pid)
        )
        result["resident_mib"] = {
            "api": process_rss_mib(service.api_pid),
            "worker": process_rss_mib(worker.pid),
        }
    print(result["load"], result["resident_mib"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16, help="Virtual users, one request each.")
    parser.add_argument("--seconds", type=float, default=60, help="How long the load lasts.")
    arguments = parser.parse_args()
    result = run(ServiceConfig(), arguments.users, arguments.seconds)
    print(write_result("load", result))


if __name__ == "__main__":
    main()
