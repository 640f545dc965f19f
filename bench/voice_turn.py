#!/usr/bin/env python
"""Voice turn latency: the platform's own time on a ConversationRelay turn.

A local OpenAI-compatible server streams every answer instantly; uvicorn serves the ASGI
app (PostgreSQL, Redis channel layer) in its own process; N concurrent calls each send
prompts over a real websocket, one after the other. Measured inside the server (the
``TIMING_HOOK`` of agents.voice.conversation):

- first token: from receiving a ``prompt`` message to having sent the first ``text`` token;
- last: from the LLM's last token to having sent our ``last: true`` message.

The client's own view (prompt sent → first token received, over the socket) is shown too.

    .venv/bin/python bench/voice_turn.py [--calls 20] [--turns 500] [--tokens 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BIN, ROOT, bench_env, free_port, wait_port

WARMUP_TURNS_PER_CALL = 2


def serve(port: int, out: str) -> None:
    """The server process: the platform's ASGI app under uvicorn, timings kept in memory."""
    import django

    django.setup()
    import uvicorn

    from agents.voice import conversation

    timings: list[tuple[float, str, float]] = []
    conversation.TIMING_HOOK = lambda name, seconds: timings.append((time.time(), name, seconds))
    server = uvicorn.Server(uvicorn.Config("comms_platform.asgi:application", host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False, lifespan="off"))  # fmt: skip

    async def serve_until_stopped() -> None:
        # uvicorn re-raises SIGTERM once it has shut down, so write the timings before that.
        signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
        await server._serve()
        Path(out).write_text(json.dumps(timings))

    if os.environ.get("BENCH_PROFILE"):  # where the server's time goes, cumulative, top 40
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, serve_until_stopped())
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
    else:
        asyncio.run(serve_until_stopped())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{name:<34} n={len(ms):<5} p50={statistics.median(ms):7.3f} ms  p90={percentile(ms, 90):7.3f} ms  "
            f"p99={percentile(ms, 99):7.3f} ms  max={max(ms):7.3f} ms")  # fmt: skip


async def run_call(
    base_ws: str, task_id: str, token: str, turns: int, client_first: list, think: float
) -> None:
    import websockets
    from twilio.request_validator import RequestValidator

    from agents.voice import links

    # The single-use URL our TwiML would hand Twilio (the server shares this SECRET_KEY).
    url = f"{base_ws}/ws/voice/relay/{task_id}/?{links.relay_query(task_id)}"
    signature = RequestValidator(token).compute_signature(url, {})
    async with websockets.connect(url, additional_headers={"X-Twilio-Signature": signature}) as ws:
        await ws.send(json.dumps({"type": "setup", "callSid": "CA" + "0" * 32, "customParameters": {}}))
        for turn in range(turns + WARMUP_TURNS_PER_CALL):
            if think:
                # The callee listens to the answer and speaks again (jittered, so the calls
                # do not march in lockstep).
                await asyncio.sleep(random.uniform(0.5, 1.5) * think)
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "prompt", "voicePrompt": f"question {turn}", "lang": "en-US",
                                      "last": True}))  # fmt: skip
            first = None
            while True:
                message = json.loads(await ws.recv())
                if first is None:
                    first = time.perf_counter() - sent
                if message.get("last"):
                    break
            if turn >= WARMUP_TURNS_PER_CALL:
                client_first.append(first)


async def run_calls(
    base_ws: str, task_ids: list[str], token: str, turns_per_call: int, think: float
) -> list[float]:
    client_first: list[float] = []
    await asyncio.gather(
        *(run_call(base_ws, t, token, turns_per_call, client_first, think) for t in task_ids)
    )
    return client_first


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--turns", type=int, default=500, help="measured turns in total (warm-up excluded)")
    parser.add_argument("--tokens", type=int, default=12, help="tokens per answer")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="pause between a call's answer and its next prompt (0: back to back)",
    )
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(int(args.serve[0]), args.serve[1])

    from tests.fakes.openai_stream import DEFAULT_TOKENS

    env = bench_env(db_name="comms_voice_bench", redis_db=2)
    turns_per_call = -(-args.turns // args.calls)
    llm_port = free_port()
    tokens = (DEFAULT_TOKENS * 4)[: args.tokens]
    # The fake model runs in its own process: every answer streamed at once, no delay.
    fake = subprocess.Popen([str(BIN / "python"), "-m", "tests.fakes.openai_stream", str(llm_port), "|".join(tokens)],
                            cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(llm_port)
        port = free_port()
        env = {**env, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
               "OPENAI_API_KEY": "sk-bench", "OPENAI_MODEL": "gpt-bench", "VOICE_MAX_DURATION_SECONDS": "3600"}  # fmt: skip
        os.environ.update(env)
        import django

        django.setup()
        from django.conf import settings

        from agents.voice import services
        from orchestrator.models import Task

        task_ids = []
        for _ in range(args.calls):
            task = Task.objects.create(type="call.outbound", channel="voice", status="in_progress", agent="voice",
                                       payload={"to": "+14155550123", "goal": "benchmark the voice turn",
                                                "greeting": "Hello from the benchmark."})  # fmt: skip
            services.call_create(task_id=task.id, to="+14155550123", from_address="+15005550006")
            task_ids.append(str(task.id))
        out = Path(tempfile.mkdtemp(prefix="voice-bench-")) / "timings.json"
        server = subprocess.Popen(
            [str(BIN / "python"), __file__, "--serve", str(port), str(out)], cwd=ROOT, env=env
        )
        try:
            wait_port(port)
            print(f"{args.calls} concurrent calls x {turns_per_call} turns (+{WARMUP_TURNS_PER_CALL} warm-up each), "
                  f"{args.tokens}-token answers streamed instantly, think time {args.think_ms:g} ms", flush=True)  # fmt: skip
            began = time.perf_counter()
            client_first = asyncio.run(
                run_calls(
                    f"ws://127.0.0.1:{port}",
                    task_ids,
                    settings.TWILIO_AUTH_TOKEN,
                    turns_per_call,
                    args.think_ms / 1000,
                )
            )
            elapsed = time.perf_counter() - began
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    finally:
        fake.terminate()
        fake.wait()
    timings = json.loads(out.read_text())
    # Drop each call's warm-up turns: the first answers open the model client's connections.
    measured_first = [s for _, name, s in timings if name == "first_token"]
    measured_last = [s for _, name, s in timings if name == "last"]
    skip = args.calls * WARMUP_TURNS_PER_CALL
    measured_first, measured_last = measured_first[skip:], measured_last[skip:]
    print(
        f"{len(client_first)} measured turns in {elapsed:.1f} s ({len(client_first) / elapsed:.0f} turns/s)"
    )
    print(summary("server: prompt -> first token sent", measured_first))
    print(summary("server: last LLM token -> last:true", measured_last))
    print(summary("client: prompt sent -> first token", client_first))
    target = statistics.median(measured_first) < 0.005 and percentile(measured_first, 99) < 0.025
    print(f"target (first token p50 < 5 ms, p99 < 25 ms): {'met' if target else 'NOT met'}")


if __name__ == "__main__":
    main()
