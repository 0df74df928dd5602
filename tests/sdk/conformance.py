#!/usr/bin/env python3
"""Wire conformance of `agentform serve` against the UNMODIFIED official SDK.

    python conformance.py BASE_URL API_KEY

The server must run with the model backends of `tests/sdk/agentform.yaml`
(`agentform serve ... -f tests/sdk/agentform.yaml`): `scripted-echo` answers
with one text turn, `scripted-tool` calls the custom tool `lookup_ticket`
and then answers.

Every response body is validated STRICTLY (pydantic strict mode, from the
raw HTTP text, never from an already-parsed model) against the SDK's own
response model; every streamed SSE frame against the SDK's stream event
union. Each check is listed with its outcome; the exit status is 1 when any
check failed, 2 on bad usage.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
import itertools
import traceback
from typing import Any, Dict, List, Optional, Union, Callable, get_args, get_origin

try:
    from typing import Annotated
except ImportError:  # pragma: no cover
    from typing_extensions import Annotated

import pydantic
from pydantic import TypeAdapter

import anthropic
from anthropic import Stream
from anthropic.types.beta import (
    BetaEnvironment,
    BetaManagedAgentsAgent,
    BetaManagedAgentsSession,
    BetaEnvironmentDeleteResponse,
    BetaManagedAgentsDeletedSession,
)
from anthropic.types.beta.sessions import (
    BetaManagedAgentsSessionEvent,
    BetaManagedAgentsSendSessionEvents,
    BetaManagedAgentsStreamSessionEvents,
)
from anthropic.types.beta_error_response import BetaErrorResponse
from anthropic.types.shared.error_type import ErrorType

# A stream is read at most this many frames; a hung read fails after the client timeout.
MAX_FRAMES = 500
# Auto-pagination is followed at most this many items (a server whose cursor never ends must not hang us).
MAX_ITEMS = 1000
TIMEOUT_S = 30.0

# --------------------------------------------------------------------------------------------------
# Results


class Report:
    def __init__(self) -> None:
        self.results: List[tuple] = []  # (name, ok, detail)
        self.notes: List[str] = []

    def ok(self, name: str) -> None:
        self.results.append((name, True, ""))
        print(f"PASS  {name}", flush=True)

    def fail(self, name: str, detail: str) -> None:
        self.results.append((name, False, detail))
        print(f"FAIL  {name}", flush=True)
        for line in detail.rstrip().splitlines():
            print(f"      {line}", flush=True)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def summary(self) -> int:
        passed = sum(1 for _, ok, _ in self.results if ok)
        failed = len(self.results) - passed
        print()
        if self.notes:
            print("notes (not failures):")
            for n in self.notes:
                print(f"  - {n}")
            print()
        if failed:
            print("failed checks:")
            for name, ok, detail in self.results:
                if not ok:
                    first = detail.strip().splitlines()[0] if detail.strip() else ""
                    print(f"  - {name}: {first}")
            print()
        print(f"{passed} passed, {failed} failed")
        return 0 if failed == 0 else 1


R = Report()


class CheckFailed(Exception):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def check(name: str, fn: Callable[[], Any]) -> Any:
    """Run one check; record pass/fail; return fn's value or None on failure."""
    try:
        value = fn()
    except CheckFailed as e:
        R.fail(name, str(e))
        return None
    except anthropic.APIStatusError as e:
        R.fail(
            name,
            f"unexpected {type(e).__name__} (HTTP {e.status_code}, request-id {e.request_id}): {e.body!r}",
        )
        return None
    except Exception as e:  # noqa: BLE001 - every failure must be reported, not crash the run
        R.fail(name, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
        return None
    R.ok(name)
    return value


def need(*values: Any) -> None:
    """Skip-as-failure when an earlier step produced nothing."""
    for v in values:
        if v is None:
            raise CheckFailed("not run: an earlier step it depends on failed")


# --------------------------------------------------------------------------------------------------
# Strict validation


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> List[Any]:
    tp = _unwrap(tp)
    if get_origin(tp) is Union:
        return [_unwrap(a) for a in get_args(tp)]
    return [tp]


def _type_literal(model: Any) -> Optional[str]:
    field = getattr(model, "model_fields", {}).get("type")
    if field is None:
        return None
    args = get_args(_unwrap(field.annotation))
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


_ADAPTERS: Dict[Any, TypeAdapter] = {}


def _adapter(tp: Any) -> TypeAdapter:
    key = id(tp)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(tp)
    return _ADAPTERS[key]


def _extras(obj: Any, path: str, out: List[str]) -> None:
    """Fields the SDK model does not declare (allowed, reported as notes)."""
    if isinstance(obj, pydantic.BaseModel):
        for k in (obj.__pydantic_extra__ or {}).keys():
            out.append(f"{path}.{k}")
        for name in type(obj).model_fields:
            _extras(getattr(obj, name, None), f"{path}.{name}", out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _extras(v, f"{path}[{i}]", out)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _extras(v, f"{path}.{k}", out)


def validate(tp: Any, data: Any, what: str) -> Any:
    """Validate `data` (decoded JSON) strictly against the SDK type `tp`.

    A union is resolved by the `type` key to its single member first, so an
    error names the exact model and field rather than every member.
    """
    members = _union_members(tp)
    target = tp
    label = getattr(tp, "__name__", None) or str(tp)
    if len(members) > 1:
        by_type = {_type_literal(m): m for m in members}
        t = data.get("type") if isinstance(data, dict) else None
        if t not in by_type:
            known = ", ".join(sorted(k for k in by_type if k))
            raise CheckFailed(f"{what}: `type` {t!r} is not a member of the SDK union ({known})")
        target = by_type[t]
        label = target.__name__
    try:
        # Strict mode on the JSON text: no "1" -> 1 coercion, no int -> str, exact literals.
        value = _adapter(target).validate_json(json.dumps(data), strict=True)
    except pydantic.ValidationError as e:
        raise CheckFailed(
            f"{what}: SDK model {label} rejects the response\n{e}\n--- value\n{json.dumps(data, indent=1)[:3000]}"
        ) from None
    extras: List[str] = []
    _extras(value, label, extras)
    for x in extras:
        R.note(f"field not declared by the SDK model (tolerated): {x}")
    return value


def validate_page(item_tp: Any, data: Any, what: str, bidirectional: bool = False) -> List[Any]:
    """A PageCursor / BidirectionalPageCursor body: data[] of item_tp, next_page (and prev_page) optional str."""
    expect(isinstance(data, dict), f"{what}: page body is not an object: {data!r}")
    expect(isinstance(data.get("data"), list), f"{what}: page lacks a `data` array: {json.dumps(data)[:500]}")
    keys = ["next_page"] + (["prev_page"] if bidirectional else [])
    for k in keys:
        v = data.get(k)
        expect(v is None or isinstance(v, str), f"{what}: `{k}` must be a string or null/absent, got {v!r}")
    return [validate(item_tp, item, f"{what} data[{i}]") for i, item in enumerate(data["data"])]


def raw_json(raw: Any, what: str) -> Any:
    """The body of an SDK raw response, checked for transport conventions."""
    http = raw.http_response
    ctype = http.headers.get("content-type", "")
    expect(
        ctype.split(";")[0].strip().endswith("json"),
        f"{what}: content-type {ctype!r} does not end with json",
    )
    expect(bool(http.headers.get("request-id")), f"{what}: no `request-id` response header")
    try:
        return json.loads(http.text)
    except ValueError as e:
        raise CheckFailed(f"{what}: body is not JSON ({e}): {http.text[:500]!r}") from None


def call(method: Callable[..., Any], tp: Any, what: str, *args: Any, **kwargs: Any) -> Any:
    """`resource.with_raw_response.method(...)`, body validated strictly against `tp`.

    Also parses through the SDK (`raw.parse()`), the path real users take."""
    raw = method(*args, **kwargs)
    data = raw_json(raw, what)
    value = validate(tp, data, what)
    raw.parse()
    return value, data


def call_page(method: Callable[..., Any], item_tp: Any, what: str, *args: Any, bidirectional: bool = False, **kwargs: Any):
    raw = method(*args, **kwargs)
    data = raw_json(raw, what)
    items = validate_page(item_tp, data, what, bidirectional)
    raw.parse()
    return items, data


# --------------------------------------------------------------------------------------------------
# SSE


class Frames:
    """Frames of one SSE stream, read with the SDK's own decoder, each validated strictly."""

    def __init__(self, response: Any, what: str) -> None:
        self.events = Stream.raw_events(response)
        self.what = what
        self.seen: List[Any] = []

    def until_idle(self) -> List[Any]:
        """Read until `session.status_idle` (or a terminal status); returns validated events."""
        out = []
        for n, sse in enumerate(self.events):
            expect(n < MAX_FRAMES, f"{self.what}: no session.status_idle within {MAX_FRAMES} frames")
            if sse.event == "ping":
                continue
            if sse.event is None:
                raise CheckFailed(
                    f"{self.what}: frame without an `event:` line (the SDK silently drops it): data={sse.data[:300]!r}"
                )
            if sse.event == "error":
                raise CheckFailed(f"{self.what}: server sent an `event: error` frame: {sse.data[:500]!r}")
            if not sse.data:
                R.note(f"{self.what}: frame `event: {sse.event}` with empty data (the SDK skips it)")
                continue
            try:
                data = json.loads(sse.data)
            except ValueError as e:
                raise CheckFailed(f"{self.what}: frame data is not JSON ({e}): {sse.data[:300]!r}") from None
            ev = validate(BetaManagedAgentsStreamSessionEvents, data, f"{self.what} frame `{sse.event}`")
            if sse.event != data.get("type"):
                R.note(f"SSE `event:` name {sse.event!r} differs from the JSON type {data.get('type')!r}")
            out.append(ev)
            self.seen.append(ev)
            if ev.type in ("session.status_idle", "session.status_terminated"):
                return out
        raise CheckFailed(
            f"{self.what}: the stream ended before session.status_idle; got {[e.type for e in out]}"
        )


def sdk_until_idle(stream: Any, what: str) -> List[Any]:
    """The SDK's own iteration of a stream (the objects users see)."""
    out = []
    for ev in itertools.islice(stream, MAX_FRAMES):
        out.append(ev)
        if getattr(ev, "type", None) in ("session.status_idle", "session.status_terminated"):
            return out
    raise CheckFailed(f"{what}: SDK iteration ended before session.status_idle; got {[getattr(e, 'type', e) for e in out]}")


def types_of(events: List[Any]) -> List[str]:
    return [e.type for e in events]


def text_of(events: List[Any]) -> str:
    return "\n".join(
        b.text for e in events if e.type == "agent.message" for b in e.content if getattr(b, "type", "") == "text"
    )


# --------------------------------------------------------------------------------------------------
# Errors


def expect_error(name: str, exc_cls: type, status: int, error_type: Optional[str], fn: Callable[[], Any], strict_envelope: bool = True) -> None:
    def run() -> None:
        try:
            value = fn()
        except exc_cls as e:
            expect(e.status_code == status, f"status {e.status_code}, expected {status}")
            expect(bool(e.request_id), f"no request id (`request-id` header) on the {status} error")
            body = e.body
            expect(isinstance(body, dict), f"error body is not a JSON object: {body!r}")
            if strict_envelope:
                env = validate(BetaErrorResponse, body, f"{status} envelope")
                etype = env.error.type
            else:
                # `conflict_error` is an SDK ErrorType but not a member of the ErrorObject union:
                # check the envelope shape by hand.
                expect(body.get("type") == "error", f"envelope `type` is {body.get('type')!r}, expected 'error'")
                err = body.get("error")
                expect(isinstance(err, dict), f"envelope `error` is not an object: {err!r}")
                validate(ErrorType, err.get("type"), f"{status} envelope error.type")
                expect(isinstance(err.get("message"), str) and err["message"], f"error.message missing/empty: {err!r}")
                rid = body.get("request_id")
                expect(rid is None or isinstance(rid, str), f"request_id is not a string: {rid!r}")
                etype = err.get("type")
            if error_type is not None:
                expect(etype == error_type, f"error.type {etype!r}, expected {error_type!r}")
            expect(e.type == etype, f"SDK exposes type {e.type!r}, body says {etype!r}")
            expect(bool(e.api_message), "SDK exposes no api_message (error.message)")
            if body.get("request_id") is not None:
                expect(
                    body["request_id"] == e.request_id,
                    f"body request_id {body['request_id']!r} != header request-id {e.request_id!r}",
                )
            return
        except anthropic.APIStatusError as e:
            raise CheckFailed(
                f"raised {type(e).__name__} (HTTP {e.status_code}), expected {exc_cls.__name__}: {e.body!r}"
            ) from None
        raise CheckFailed(f"no error raised, expected {exc_cls.__name__}; got {value!r}"[:800])

    check(name, run)


# --------------------------------------------------------------------------------------------------
# The scenario


def main(argv: List[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    base_url, api_key = argv[1], argv[2]
    print(f"anthropic {anthropic.__version__}, pydantic {pydantic.VERSION}, server {base_url}", flush=True)
    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=TIMEOUT_S)
    agents = client.beta.agents
    envs = client.beta.environments
    sessions = client.beta.sessions
    events = client.beta.sessions.events
    tag = uuid.uuid4().hex[:8]
    S: Dict[str, Any] = {}

    # ---- agents
    lookup_tool = {
        "type": "custom",
        "name": "lookup_ticket",
        "description": "Look up a support ticket by its id",
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    }
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}],
    }

    def create_agent():
        agent, _ = call(
            agents.with_raw_response.create,
            BetaManagedAgentsAgent,
            "agents.create",
            name=f"conformance-{tag}",
            model="scripted-tool",
            system="You are a support agent. Look tickets up before answering.",
            tools=[toolset, lookup_tool],
            metadata={"suite": "conformance"},
        )
        expect(agent.version == 1, f"new agent version {agent.version}, expected 1")
        expect(agent.model.id == "scripted-tool", f"model.id {agent.model.id!r}")
        expect(agent.archived_at is None, f"archived_at {agent.archived_at!r} on a new agent")
        expect(agent.metadata == {"suite": "conformance"}, f"metadata {agent.metadata!r}")
        kinds = [t.type for t in agent.tools]
        expect(kinds == ["agent_toolset_20260401", "custom"], f"tools {kinds}")
        ts = agent.tools[0]
        bash = [c for c in ts.configs if c.name == "bash"]
        expect(bash and bash[0].permission_policy.type == "always_ask", f"bash config {bash!r}")
        expect(agent.tools[1].name == "lookup_ticket", f"custom tool {agent.tools[1]!r}")
        return agent

    agent = S["agent"] = check("agents.create: agent with custom tool + agent toolset", create_agent)

    def retrieve_agent():
        need(agent)
        got, _ = call(agents.with_raw_response.retrieve, BetaManagedAgentsAgent, "agents.retrieve", agent.id)
        expect(got.id == agent.id and got.version == 1, f"retrieve gave {got.id} v{got.version}")

    check("agents.retrieve", retrieve_agent)

    def update_agent():
        need(agent)
        upd, _ = call(
            agents.with_raw_response.update,
            BetaManagedAgentsAgent,
            "agents.update",
            agent.id,
            version=1,
            model="scripted-echo",
            description="Version 2 answers from scripted-echo",
        )
        expect(upd.version == 2, f"updated agent version {upd.version}, expected 2")
        expect(upd.model.id == "scripted-echo", f"updated model.id {upd.model.id!r}")
        expect(upd.description == "Version 2 answers from scripted-echo", f"description {upd.description!r}")
        expect(upd.system == agent.system, "system changed although the update omitted it")
        return upd

    agent_v2 = check("agents.update -> version 2", update_agent)

    def retrieve_v1():
        need(agent_v2)
        got, _ = call(agents.with_raw_response.retrieve, BetaManagedAgentsAgent, "agents.retrieve?version=1", agent.id, version=1)
        expect(got.version == 1 and got.model.id == "scripted-tool", f"v1 is v{got.version} model {got.model.id}")

    check("agents.retrieve(version=1)", retrieve_v1)

    def list_versions():
        need(agent_v2)
        items, _ = call_page(agents.versions.with_raw_response.list, BetaManagedAgentsAgent, "agents.versions.list", agent.id)
        got = sorted(a.version for a in items)
        expect(got == [1, 2], f"versions {got}, expected [1, 2]")
        expect(all(a.id == agent.id for a in items), "a version of another agent is listed")
        # The SDK's own auto-pagination must terminate.
        walked = [a.version for a in itertools.islice(agents.versions.list(agent.id, limit=1), MAX_ITEMS)]
        expect(sorted(walked) == [1, 2], f"auto-pagination with limit=1 gave {walked}")

    check("agents.versions.list (+ auto-pagination, limit=1)", list_versions)

    def stale_update():
        need(agent_v2)
        try:
            agents.update(agent.id, version=1, description="stale")
        except anthropic.APIStatusError as e:
            expect(400 <= e.status_code < 500, f"stale version update gave HTTP {e.status_code}")
            expect(isinstance(e.body, dict) and e.body.get("type") == "error", f"envelope {e.body!r}")
            return
        raise CheckFailed("an update with a stale `version` succeeded")

    check("agents.update with a stale version is refused (4xx envelope)", stale_update)

    def list_agents():
        need(agent)
        items, _ = call_page(agents.with_raw_response.list, BetaManagedAgentsAgent, "agents.list", limit=100)
        expect(any(a.id == agent.id for a in items), "the new agent is not listed")

    check("agents.list", list_agents)

    # ---- environments
    env_name = f"conformance-env-{tag}"

    def create_env():
        env, _ = call(
            envs.with_raw_response.create,
            BetaEnvironment,
            "environments.create",
            name=env_name,
            config={"type": "cloud", "networking": {"type": "unrestricted"}},
            metadata={"suite": "conformance"},
        )
        expect(env.name == env_name, f"name {env.name!r}")
        expect(env.config.type == "cloud", f"config {env.config!r}")
        return env

    env = S["env"] = check("environments.create", create_env)

    def retrieve_env():
        need(env)
        got, _ = call(envs.with_raw_response.retrieve, BetaEnvironment, "environments.retrieve", env.id)
        expect(got.id == env.id, "wrong environment")

    check("environments.retrieve", retrieve_env)

    def list_envs():
        need(env)
        items, _ = call_page(envs.with_raw_response.list, BetaEnvironment, "environments.list")
        expect(any(e.id == env.id for e in items), "the new environment is not listed")

    check("environments.list", list_envs)

    expect_error(
        "environments.create duplicate name -> 409 ConflictError",
        anthropic.ConflictError,
        409,
        None,
        lambda: envs.create(name=env_name, config={"type": "cloud", "networking": {"type": "unrestricted"}}),
        strict_envelope=False,
    )

    # ---- sessions
    def create_session_latest():
        need(agent_v2, env)
        s, _ = call(
            sessions.with_raw_response.create,
            BetaManagedAgentsSession,
            "sessions.create(agent=str)",
            agent=agent.id,
            environment_id=env.id,
            title="latest",
        )
        expect(s.agent.id == agent.id, f"session agent {s.agent.id}")
        expect(s.agent.version == 2, f"string agent form pinned version {s.agent.version}, expected latest (2)")
        expect(s.environment_id == env.id, f"environment_id {s.environment_id}")
        expect(s.status == "idle", f"new session status {s.status!r}, expected 'idle'")
        return s

    s_latest = check("sessions.create with agent id string (latest version)", create_session_latest)

    def create_session_pinned():
        need(agent_v2, env)
        s, _ = call(
            sessions.with_raw_response.create,
            BetaManagedAgentsSession,
            "sessions.create(agent={type:agent,version:1})",
            agent={"type": "agent", "id": agent.id, "version": 1},
            environment_id=env.id,
            title="pinned",
        )
        expect(s.agent.version == 1, f"pinned session agent version {s.agent.version}, expected 1")
        expect(s.agent.model.id == "scripted-tool", f"pinned session model {s.agent.model.id!r}")
        return s

    s_pinned = check("sessions.create with {type: agent, id, version: 1}", create_session_pinned)

    def retrieve_session():
        need(s_latest)
        got, _ = call(sessions.with_raw_response.retrieve, BetaManagedAgentsSession, "sessions.retrieve", s_latest.id)
        expect(got.id == s_latest.id, "wrong session")

    check("sessions.retrieve", retrieve_session)

    def list_sessions():
        need(s_latest, s_pinned)
        items, _ = call_page(sessions.with_raw_response.list, BetaManagedAgentsSession, "sessions.list", bidirectional=True, agent_id=agent.id)
        ids = {s.id for s in items}
        expect({s_latest.id, s_pinned.id} <= ids, f"sessions.list(agent_id) lacks the new sessions: {ids}")

    check("sessions.list(agent_id=...)", list_sessions)

    # ---- one turn: stream opened first (raw frames + SDK iteration), then send
    def conversation():
        need(s_latest)
        with events.with_streaming_response.stream(s_latest.id) as raw_stream:
            expect(raw_stream.http_response.status_code == 200, f"stream HTTP {raw_stream.http_response.status_code}")
            sdk_stream = events.stream(s_latest.id)
            try:
                sent, _ = call(
                    events.with_raw_response.send,
                    BetaManagedAgentsSendSessionEvents,
                    "events.send(user.message)",
                    s_latest.id,
                    events=[{"type": "user.message", "content": [{"type": "text", "text": "Hello?"}]}],
                )
                expect(sent.data and sent.data[0].type == "user.message", f"send echoed {sent.data!r}")
                frames = Frames(raw_stream.http_response, "stream(s_latest)").until_idle()
                seen = sdk_until_idle(sdk_stream, "SDK stream(s_latest)")
            finally:
                sdk_stream.close()
        kinds = types_of(frames)
        expect("session.status_running" in kinds, f"no session.status_running in {kinds}")
        expect("agent.message" in kinds, f"no agent.message in {kinds}")
        idle = frames[-1]
        expect(idle.type == "session.status_idle", f"last frame {idle.type}")
        expect(idle.stop_reason.type == "end_turn", f"stop_reason {idle.stop_reason!r}")
        expect("Hello from the scripted model." in text_of(frames), f"reply {text_of(frames)!r}")
        expect(types_of(seen) == kinds, f"SDK iteration saw {types_of(seen)}, raw frames {kinds}")
        return frames, sent

    conv = check("stream opened first, user.message sent, streamed to status_idle (end_turn)", conversation)

    def list_events():
        need(conv)
        frames, sent = conv
        items, _ = call_page(events.with_raw_response.list, BetaManagedAgentsSessionEvent, "events.list", s_latest.id, limit=100)
        ids = [e.id for e in items]
        expect(sent.data[0].id in ids, "the sent user.message is not in the history")
        um = [e for e in items if e.type == "user.message"]
        expect(um and um[0].processed_at is not None, "user.message history entry has no processed_at")
        missing = [f.id for f in frames if f.type not in ("event_start", "event_delta") and f.id not in ids]
        expect(not missing, f"streamed events missing from events.list: {missing}")
        walked = list(itertools.islice(events.list(s_latest.id, limit=2), MAX_ITEMS))
        expect([e.id for e in walked] == ids, "auto-pagination (limit=2) differs from one page")

    check("events.list: history holds the sent and streamed events (+ pagination)", list_events)

    def session_idle_after():
        need(conv)
        got, _ = call(sessions.with_raw_response.retrieve, BetaManagedAgentsSession, "sessions.retrieve after turn", s_latest.id)
        expect(got.status == "idle", f"status {got.status!r} after the turn")

    check("session is idle after the turn", session_idle_after)

    def deltas():
        need(agent_v2, env)
        s, _ = call(
            sessions.with_raw_response.create,
            BetaManagedAgentsSession,
            "sessions.create(deltas)",
            agent=agent.id,
            environment_id=env.id,
        )
        with events.with_streaming_response.stream(s.id, event_deltas=["agent.message"]) as raw_stream:
            events.send(s.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "Hi"}]}])
            frames = Frames(raw_stream.http_response, "stream(event_deltas=[agent.message])").until_idle()
        kinds = types_of(frames)
        expect("agent.message" in kinds, f"no agent.message in {kinds}")
        starts = [f for f in frames if f.type == "event_start"]
        if not starts:
            R.note("no event_start/event_delta previews with event_deltas=[agent.message] (allowed: best-effort)")
            return
        msg = [f for f in frames if f.type == "agent.message"][0]
        expect(any(st.event.id == msg.id for st in starts), f"no event_start for agent.message {msg.id}")
        pieces = "".join(f.delta.content.text for f in frames if f.type == "event_delta" and f.event_id == msg.id)
        expect(pieces == text_of([msg]), f"deltas {pieces!r} != final text {text_of([msg])!r}")

    check("stream with event_deltas=[agent.message]: previews validate and add up", deltas)

    # ---- custom tool round trip on the pinned (v1, scripted-tool) session
    def custom_tool():
        need(s_pinned)
        with events.with_streaming_response.stream(s_pinned.id) as raw_stream:
            sent, _ = call(
                events.with_raw_response.send,
                BetaManagedAgentsSendSessionEvents,
                "events.send(user.message)",
                s_pinned.id,
                events=[{"type": "user.message", "content": [{"type": "text", "text": "What is ticket T-42 about?"}]}],
            )
            frames = Frames(raw_stream.http_response, "stream(s_pinned) leg 1")
            leg1 = frames.until_idle()
            kinds = types_of(leg1)
            uses = [e for e in leg1 if e.type == "agent.custom_tool_use"]
            expect(uses, f"no agent.custom_tool_use in {kinds}")
            use = uses[0]
            expect(use.name == "lookup_ticket" and use.input == {"id": "T-42"}, f"tool use {use!r}")
            idle = leg1[-1]
            expect(idle.type == "session.status_idle", f"leg 1 ended with {idle.type}")
            expect(idle.stop_reason.type == "requires_action", f"leg 1 stop_reason {idle.stop_reason!r}")
            expect(use.id in idle.stop_reason.event_ids, f"requires_action.event_ids {idle.stop_reason.event_ids} lacks {use.id}")
            sent2, _ = call(
                events.with_raw_response.send,
                BetaManagedAgentsSendSessionEvents,
                "events.send(user.custom_tool_result)",
                s_pinned.id,
                events=[
                    {
                        "type": "user.custom_tool_result",
                        "custom_tool_use_id": use.id,
                        "content": [{"type": "text", "text": "ticket T-42: failed payment, 30 EUR, open"}],
                    }
                ],
            )
            expect(sent2.data and sent2.data[0].type == "user.custom_tool_result", f"send echoed {sent2.data!r}")
            leg2 = frames.until_idle()
        idle2 = leg2[-1]
        expect(idle2.type == "session.status_idle" and idle2.stop_reason.type == "end_turn", f"leg 2 ended with {idle2!r}")
        expect("T-42" in text_of(leg2), f"final reply {text_of(leg2)!r}")
        return use

    use = check("custom tool round trip: custom_tool_use -> requires_action -> user.custom_tool_result -> end_turn", custom_tool)

    def list_events_tool():
        need(use)
        items, _ = call_page(events.with_raw_response.list, BetaManagedAgentsSessionEvent, "events.list(pinned)", s_pinned.id, limit=100)
        kinds = [e.type for e in items]
        for k in ("user.message", "agent.custom_tool_use", "user.custom_tool_result", "agent.message", "session.status_idle"):
            expect(k in kinds, f"history lacks {k}: {kinds}")
        filtered, _ = call_page(
            events.with_raw_response.list,
            BetaManagedAgentsSessionEvent,
            "events.list(types[]=agent.custom_tool_use)",
            s_pinned.id,
            types=["agent.custom_tool_use"],
        )
        expect([e.type for e in filtered] == ["agent.custom_tool_use"], f"types[] filter gave {[e.type for e in filtered]}")

    check("events.list of the tool session (+ types[] filter)", list_events_tool)

    # ---- errors
    expect_error(
        "agents.retrieve missing id -> 404 NotFoundError",
        anthropic.NotFoundError,
        404,
        "not_found_error",
        lambda: agents.retrieve("agent_doesnotexist0000000000"),
    )
    expect_error(
        "sessions.retrieve missing id -> 404 NotFoundError",
        anthropic.NotFoundError,
        404,
        "not_found_error",
        lambda: sessions.retrieve("sesn_doesnotexist0000000000"),
    )
    expect_error(
        "environments.retrieve missing id -> 404 NotFoundError",
        anthropic.NotFoundError,
        404,
        "not_found_error",
        lambda: envs.retrieve("env_doesnotexist0000000000"),
    )
    bad = anthropic.Anthropic(base_url=base_url, api_key="wrong-" + api_key, max_retries=0, timeout=TIMEOUT_S)
    expect_error(
        "wrong API key -> 401 AuthenticationError",
        anthropic.AuthenticationError,
        401,
        "authentication_error",
        lambda: bad.beta.agents.list(),
    )

    # ---- archive and delete
    def archive_session():
        need(s_latest)
        got, _ = call(sessions.with_raw_response.archive, BetaManagedAgentsSession, "sessions.archive", s_latest.id)
        expect(got.archived_at is not None, "archived session has no archived_at")

    check("sessions.archive", archive_session)

    def delete_sessions():
        need(s_latest, s_pinned)
        for s in (s_latest, s_pinned):
            got, _ = call(sessions.with_raw_response.delete, BetaManagedAgentsDeletedSession, "sessions.delete", s.id)
            expect(got.id == s.id and got.type == "session_deleted", f"delete gave {got!r}")
        try:
            sessions.retrieve(s_pinned.id)
        except anthropic.NotFoundError:
            return
        raise CheckFailed("a deleted session can still be retrieved")

    check("sessions.delete (then 404)", delete_sessions)

    def archive_agent():
        need(agent)
        got, _ = call(agents.with_raw_response.archive, BetaManagedAgentsAgent, "agents.archive", agent.id)
        expect(got.archived_at is not None, "archived agent has no archived_at")
        items, _ = call_page(agents.with_raw_response.list, BetaManagedAgentsAgent, "agents.list(include_archived)", include_archived=True, limit=100)
        expect(any(a.id == agent.id for a in items), "an archived agent is missing from include_archived=true")

    check("agents.archive", archive_agent)

    def archive_env():
        need(env)
        got, _ = call(envs.with_raw_response.archive, BetaEnvironment, "environments.archive", env.id)
        expect(got.archived_at is not None, "archived environment has no archived_at")

    check("environments.archive", archive_env)

    def delete_env():
        need(env)
        got, _ = call(envs.with_raw_response.delete, BetaEnvironmentDeleteResponse, "environments.delete", env.id)
        expect(got.id == env.id and got.type == "environment_deleted", f"delete gave {got!r}")
        try:
            envs.retrieve(env.id)
        except anthropic.NotFoundError:
            return
        raise CheckFailed("a deleted environment can still be retrieved")

    check("environments.delete (then 404)", delete_env)

    return R.summary()


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        R.fail("conformance script crashed", traceback.format_exc())
        code = R.summary() or 1
    sys.exit(code)
