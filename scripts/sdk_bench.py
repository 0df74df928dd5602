#!/usr/bin/env python3
"""The official Python SDK's side of examples/anthropic_bench.rs.

    sdk_bench.py apply SPEC.json URL KEY
        Creates the environments, agents and sessions of SPEC (written by the
        benchmark: the same bodies agentform sends) one call after another with
        client.beta.{environments,agents,sessions}.create, as a plain SDK
        script would, and times that loop.
    sdk_bench.py stream URL KEY SESSION_ID RUNS
        Iterates client.beta.sessions.events.stream(SESSION_ID) to its end RUNS
        times, counting events, and times each run.

Prints one JSON object on stdout. Meant for a server on loopback; run it with
the interpreter of the venv that scripts/sdk-venv.sh makes (anthropic==2.10.0).
"""

import json
import sys
import time

import anthropic


def client(url, key):
    # Retries stay at the SDK's default: on a healthy local server none happen.
    return anthropic.Anthropic(base_url=url, api_key=key)


def apply(spec_path, url, key):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    c = client(url, key)
    calls = 0
    start = time.perf_counter()
    env_ids = []
    for body in spec["environments"]:
        env_ids.append(c.beta.environments.create(**body).id)
        calls += 1
    agents = []
    for body in spec["agents"]:
        agents.append(c.beta.agents.create(**body))
        calls += 1
    for s in spec["sessions"]:
        agent = agents[s["agent"]]
        if s.get("version") is not None:
            ref = {"type": "agent", "id": agent.id, "version": s["version"]}
        else:
            ref = agent.id
        c.beta.sessions.create(
            agent=ref,
            environment_id=env_ids[s["environment"]],
            title=s["title"],
            metadata=s["metadata"],
        )
        calls += 1
    seconds = time.perf_counter() - start
    return {
        "calls": calls,
        "environments": len(env_ids),
        "agents": len(agents),
        "sessions": len(spec["sessions"]),
        "seconds": seconds,
        "sdk": anthropic.__version__,
    }


def stream(url, key, session_id, runs):
    c = client(url, key)
    times = []
    counts = []
    for _ in range(runs):
        n = 0
        start = time.perf_counter()
        with c.beta.sessions.events.stream(session_id) as events:
            for _event in events:
                n += 1
        times.append(time.perf_counter() - start)
        counts.append(n)
    return {"events": counts, "seconds": times, "sdk": anthropic.__version__}


def main(argv):
    if len(argv) == 4 and argv[0] == "apply":
        out = apply(argv[1], argv[2], argv[3])
    elif len(argv) == 5 and argv[0] == "stream" and argv[4].isdigit():
        out = stream(argv[1], argv[2], argv[3], int(argv[4]))
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
