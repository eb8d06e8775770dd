"""Start and stop the embedded stack's processes.

Every process runs detached in its own session, logs to `<data>/logs/<name>.log` and
carries `NVRFLOW_STACK=<data dir>` in its environment; `stop` ends every process with
that tag (flow-run subprocesses of the worker included) and checks that the ports are free.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeGuard

from stack import prefect_database
from stack.paths import PROJECT_ROOT
from stack.ports import is_listening, wait_for_port
from stack.state import StackState, load_state, prepare_state

POOL_NAME = "nvrflow-local"
WORKER_LIMIT = int(os.environ.get("NVRFLOW_WORKER_LIMIT", "4"))
# Flow-run heartbeat (Prefect's minimum, 30 s) and the zombie automation's window (Prefect's
# documented 90 s: two heartbeats may go missing before a living run is declared dead, since a
# false alarm re-runs a living run and takes its worker down with it): a flow run of a deployment
# whose process died is marked Crashed 60-95 s later (window minus the time since its last
# heartbeat, plus the triggers service's 5 s granularity).
HEARTBEAT_S = 30
ZOMBIE_WINDOW_S = 90


def zombie_window_s() -> int:
    """NVRFLOW_ZOMBIE_WINDOW if set; else 90 s, or 300 s on SQLite (stack/prefect_database.py)."""
    if given := os.environ.get("NVRFLOW_ZOMBIE_WINDOW"):
        return int(given)
    return prefect_database.SQLITE_ZOMBIE_WINDOW_S if prefect_database.is_sqlite() else ZOMBIE_WINDOW_S


# What a flow run gets from the work pool's job variables (work_pools/setup.py), not from its
# worker: kept out of the workers' environment so that the stack relies on the pool as every
# other machine does.
POOL_JOB_ENV = ("NVRFLOW_ROOT", "NVRFLOW_DATA", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY")


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _spawn(
    state: StackState,
    name: str,
    argv: list[str],
    extra_env: dict[str, str] | None = None,
    drop_env: tuple[str, ...] = (),
) -> int:
    logs = state.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in (os.environ | state.env() | (extra_env or {})).items() if k not in drop_env}
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state.pids[name] = proc.pid
    state.save()
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state to tell.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _log_tail(state: StackState, name: str, lines: int = 30) -> str:
    path = state.data_dir / "logs" / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait(state: StackState, name: str, port: int, timeout: float) -> None:
    pid = state.pids[name]
    try:
        wait_for_port(port, timeout, alive=lambda: _alive(pid))
    except (TimeoutError, RuntimeError) as exc:
        raise RuntimeError(
            f"{name} did not start: {exc}\n--- {name}.log ---\n{_log_tail(state, name)}"
        ) from exc


def _run(state: StackState, argv: list[str], what: str, timeout: float = 120) -> str:
    done = subprocess.run(
        argv,
        cwd=PROJECT_ROOT,
        env=os.environ | state.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return done.stdout


def is_running(state: StackState | None) -> TypeGuard[StackState]:
    return state is not None and bool(state.pids) and all(_alive(pid) for pid in state.pids.values())


def _services(state: StackState, models: dict[str, Path]) -> dict[str, tuple[list[str], dict[str, str], int]]:
    """The stack's own services: argv, extra environment, and the port that says it is ready."""
    py, data = sys.executable, state.data_dir
    return {
        "clickhouse-gateway": (
            [py, "-m", "stack.clickhouse_gateway", "--port", str(state.gateway_port),
             "--data-dir", str(data / "clickhouse"), "--password-env", "NVRFLOW_CLICKHOUSE_PASSWORD"],
            {"NVRFLOW_CLICKHOUSE_PASSWORD": state.clickhouse_password},
            state.gateway_port,
        ),
        "model-server": (
            [py, "-m", "stack.model_server", "--port", str(state.model_port),
             *(f"--model={name}={path}" for name, path in models.items())],
            {},
            state.model_port,
        ),
        "simulator": (
            [py, "-m", "stack.simulator", "--spec", str(data / "stack" / "simulator.json")],
            {},
            state.recorder_ports[-1],
        ),
    }  # fmt: skip


def start(root: Path | None = None, say: Callable[[str], None] = print, scripted: bool = True) -> StackState:
    """Bring the stack up (idempotent: a running stack is left as it is).

    `scripted`: the simulated cameras show the scripted scenes of people and vehicles (the demo's);
    else the still photographs whose ImageNet labels the classifier's tests check.
    """
    from stack.models import ensure_models
    from stack.simulator.recordings import build_catalogue
    from stack.simulator.spec import demo_spec, spec_from_dict

    current = load_state(root)
    if is_running(current):
        say(f"stack already running at {current.ui_url}")
        return current
    if current and current.pids:
        stop(current.data_dir, say=say)
    state = prepare_state(root)
    data = state.data_dir
    models = ensure_models()

    spec_path = data / "stack" / "simulator.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec = demo_spec(state.recorder_ports, state.recorder_password, scripted=scripted)
    spec_path.write_text(json.dumps(spec, indent=2))
    # The footage is made once and cached; made here, the simulator starts at once.
    say("footage for the simulated recorders (made once, then cached) ...")
    simulated = spec_from_dict(spec)
    for recorder in simulated.recorders:
        build_catalogue(recorder, simulated.width, simulated.height, simulated.fps)

    _spawn(
        state,
        "prefect-server",
        [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(state.prefect_port)],
        {"PREFECT_API_DATABASE_CONNECTION_URL": prefect_database.ensure(data, state.prefect_db_password)},
    )
    services = _services(state, models)
    for name, (argv, env, _port) in services.items():
        _spawn(state, name, argv, env)
    for name, (_argv, _env, port) in services.items():
        _wait(state, name, port, 120)
    _wait(state, "prefect-server", state.prefect_port, 120)
    _wait_healthy(state)
    say(f"services up: Prefect {state.ui_url}, ClickHouse {state.clickhouse_url}, model {state.model_target}")

    _run(state, [_bin("prefect"), "block", "register", "-m", "blocks"], "prefect block register")
    _run(state, [sys.executable, "-m", "stack.register"], "registering blocks, limits and schema")
    _run(
        state,
        [sys.executable, "-m", "work_pools.setup", "--pool", POOL_NAME, "--root", str(PROJECT_ROOT),
         "--data", str(data), "--heartbeat", str(HEARTBEAT_S), "--zombie-window", str(zombie_window_s())],
        "work pool and automations setup",
    )  # fmt: skip
    _run(state, [_bin("prefect"), "--no-prompt", "deploy", "--all"], "prefect deploy", timeout=300)
    _run(state, [sys.executable, "-m", "stack.register", "--after-deploy"], "recorder schedules")
    start_worker(state, "worker")
    start_review_app(state)
    write_env_file(state)
    say(f"review app: {state.review_url} (password: review_password in {state.file})")
    say(f"stack up; for the CLI: source {state.data_dir / 'stack' / 'env.sh'}")
    return state


def start_review_app(state: StackState, timeout: float = 120) -> int:
    """The review app (`python -m review`) on the stack's blocks; returns once it listens."""
    argv = [sys.executable, "-m", "review", "--host", "127.0.0.1", "--port", str(state.review_port)]
    pid = _spawn(state, "review-app", argv, {"NVRFLOW_REVIEW_PASSWORD": state.review_password})
    _wait(state, "review-app", state.review_port, timeout)
    return pid


def start_worker(state: StackState, name: str = "worker", timeout: float = 60) -> int:
    """A process worker of the stack's pool (`name` tells several apart); returns once it polls."""
    pid = _spawn(
        state,
        name,
        [_bin("prefect"), "worker", "start", "--pool", POOL_NAME, "--limit", str(WORKER_LIMIT),
         "--name", f"{name}-{os.uname().nodename}-{state.prefect_port}"],
        drop_env=POOL_JOB_ENV,
    )  # fmt: skip
    _wait_worker_online(state, name, f"{name}-{os.uname().nodename}-{state.prefect_port}", timeout)
    return pid


def _wait_worker_online(state: StackState, name: str, worker_name: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(state.pids[name]):
            break
        try:
            found = httpx.post(f"{state.api_url}/work_pools/{POOL_NAME}/workers/filter", json={}, timeout=5)
            if found.status_code == 200 and any(
                w.get("name") == worker_name and w.get("status") == "ONLINE" for w in found.json()
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"worker {name} did not come online\n{_log_tail(state, name)}")


def _wait_healthy(state: StackState, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{state.api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not _alive(state.pids["prefect-server"]):
            break
        time.sleep(0.3)
    raise RuntimeError(f"Prefect server not healthy\n{_log_tail(state, 'prefect-server')}")


def write_env_file(state: StackState) -> Path:
    env = state.env()
    keys = ["PREFECT_API_URL", "PREFECT_HOME", "NVRFLOW_DATA", "PREFECT_SERVER_ANALYTICS_ENABLED"]
    lines = [f"export {k}='{env[k]}'" for k in keys]
    lines.append(f"export PATH='{Path(sys.executable).parent}':\"$PATH\"")
    path = state.data_dir / "stack" / "env.sh"
    path.write_text("\n".join(lines) + "\n")
    return path


def _tagged_pids(tag: str) -> list[int]:
    needle = f"NVRFLOW_STACK={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop(root: Path | None = None, say: Callable[[str], None] = print, timeout: float = 20) -> None:
    state = load_state(root)
    if state is None:
        say("stack not started here: nothing to stop")
        return
    tag = str(state.data_dir)
    # The worker first, so that it does not pick up new runs while the rest goes down.
    order = ["worker", "review-app", "simulator", "model-server", "clickhouse-gateway", "prefect-server"]
    extra_workers = sorted(n for n in state.pids if n.startswith("worker-"))
    pids = [state.pids[n] for n in extra_workers + order if n in state.pids] + _tagged_pids(tag)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids + _tagged_pids(tag)):
        time.sleep(0.2)
    leftovers = [p for p in pids + _tagged_pids(tag) if _alive(p)]
    if leftovers:
        _signal_all(leftovers, signal.SIGKILL)
        time.sleep(0.5)
    busy = [p for p in state.all_ports() if is_listening(p)]
    state.pids = {}
    state.save()
    if busy or any(_alive(p) for p in leftovers):
        raise RuntimeError(f"stack stopped, but ports still bound: {busy}")
    say("stack stopped: no process left, ports free")


def status(root: Path | None = None) -> dict[str, str]:
    state = load_state(root)
    if state is None:
        return {}
    return {name: ("running" if _alive(pid) else "stopped") for name, pid in state.pids.items()}


def stop_service(name: str, root: Path | None = None, timeout: float = 30) -> None:
    """Stop one of the stack's processes (e.g. "clickhouse-gateway"); returns once it has exited."""
    state = load_state(root)
    if state is None or name not in state.pids:
        raise RuntimeError(f"{name} is not running in this stack")
    pid = state.pids.pop(name)
    _signal_all([pid], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        _signal_all([pid], signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    # Saved without the pid, so a later stop never signals a recycled one.
    state.save()


def start_service(name: str, root: Path | None = None, timeout: float = 120) -> int:
    """Start one stopped process of a running stack again, on its old port and data; returns its pid.

    `worker` (or another `worker-<x>`, an extra worker of the same pool) returns once it polls."""
    from stack.models import ensure_models

    state = load_state(root)
    if state is None:
        raise RuntimeError("stack not started here")
    if name in state.pids and _alive(state.pids[name]):
        return state.pids[name]
    if name == "worker" or name.startswith("worker-"):
        return start_worker(state, name, timeout)
    commands = _services(state, ensure_models())
    if name not in commands:
        raise ValueError(f"cannot restart {name!r} alone; one of {sorted(commands)}")
    argv, env, port = commands[name]
    pid = _spawn(state, name, argv, env)
    _wait(state, name, port, timeout)
    return pid
