"""One execution on one machine, from a clean folder to stored outputs and a final status."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from vh_orch import failpoints
from vh_orch.config.resources import step_limits
from vh_orch.config.steps import get_step, parse_config
from vh_orch.errors import ConfigError, LeaseLost, TransientCloudError, UserInputError, VhOrchError
from vh_orch.bootstrap.remote import RemoteDockerRuntime as RemoteRuntime
from vh_orch.bootstrap.isolation import Isolation
from vh_orch.bootstrap.registry_login import RegistryAuth
from vh_orch.bootstrap.runtimes import (
    CONTAINER_ROOT,
    FOLDERS,
    VANISHED,
    RunningCommand,
    Runtime,
    RunSpec,
    RuntimeFailure,
    open_to_image_user,
)
from vh_orch.bootstrap.ssh import SSHError, SSHTransport
from vh_orch.bootstrap.usage import Probe
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.orchestrator.datasets.ingest import describe, read_local, read_remote
from vh_orch.orchestrator.datasets.metadata import metadata_files
from vh_orch.orchestrator.logs import LogIngester
from vh_orch.orchestrator.metrics import DaemonMetrics
from vh_orch.orchestrator.models import Environment, Execution, Output
from vh_orch.orchestrator.registries import registry_auth_for
from vh_orch.orchestrator.secrets import merge_secrets, secret_values
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings
from vh_orch.storage.datastore import Datastore, file_uri_path
from vh_orch.storage.datastores import datastore_from_settings
from vh_orch.storage.input_cache import (
    InputCache,
    InputCacheError,
    LocalShell,
    Placed,
    cache_bound_bytes,
    file_source,
    identify,
    pin_name,
)
from vh_orch.storage.inputs import DatumRef, InputFetchError, InputFile, fetch_file, plan_inputs, stream_file
from vh_orch.storage.snapshots import extract_adhoc, extract_git
from vh_orch.timeutil import iso
from vh_orch.values import ExecutionStatus

log = logging.getLogger(__name__)

S = ExecutionStatus
POLL_S = 0.05
STATUS_CHECK_S = 0.5
REATTACH_SILENCE_S = 30.0  # the least silence a re-attached command is allowed before its first line (_wait)
READ_TAIL_S = 60  # after the exit, how long the streams may take to reach their end
LOG_STORE_TIMEOUT_S = 900  # how long storing the last log lines may take (a busy database)
INPUT_WORKERS = 4  # input files placed at once
OUTPUT_WORKERS = 4  # output files stored at once
OUTPUT_RETRY_S = (1, 3, 10)  # a file whose upload broke is sent again after these pauses
RECORD_RETRY_S = (0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


@dataclass
class Outcome:
    status: str
    reason: str | None
    exit_code: int | None
    outputs: list[Output] = field(default_factory=list)  # recorded with the result, in one transaction


class ExecutionRunner:
    """Runs one claimed (`started`) execution. `run()` blocks; `stop()` may come from any thread."""

    def __init__(
        self, store: Store, settings: Settings, execution: Execution, runtime: Runtime, cluster_id: str,
        reattach: bool = False, metrics: DaemonMetrics | None = None, environment: Environment | None = None,
        project: tuple[Any, Sequence[Any]] | None = None,
    ) -> None:
        # project: its project's row and secrets' rows (Store.project_with_secrets), when the caller
        # read them for several runners at once; else read as the run begins.
        self._given_project = project
        # reattach: the execution's container was started by a daemon that died; follow it.
        self.reattach = reattach
        self.metrics = metrics
        self.store = store
        self.settings = settings
        self.execution = execution
        self.runtime = runtime
        self.cluster_id = cluster_id
        # One folder per attempt: the runner of a requeued attempt must never touch the next one's.
        self.folder = settings.executions_dir / str(execution.id) / str(execution.attempt)
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._abandoned = False
        self._detached = False
        self._lost = False
        self._settled = False
        self._running: RunningCommand | None = None
        self._command_ended = False
        self._spec: RunSpec | None = None
        self._env_settings = settings_of(environment if environment is not None and
                                         environment.id == execution.environment_id
                                         else store.get_environment_by_id(execution.environment_id))
        self._datastore_setting = self._env_settings.datastore
        self._datastore: Datastore | None = None
        self._parsed_step: Any = None
        self._cache: InputCache | None = None
        self._secret_values: dict[str, str] = {}  # the project's secrets, decrypted when the run begins
        self._project: Any = None  # its name and mirror_path, read with them

    @property
    def datastore(self) -> Datastore:
        if self._datastore is None:
            self._datastore = datastore_from_settings(self._datastore_setting, self.settings.data_dir)
        return self._datastore

    @property
    def _direct(self) -> bool:
        """Whether the machine moves data to and from the datastore itself (cloud VMs with an object store)."""
        return bool(getattr(self.runtime, "direct_data", False)) and hasattr(self.datastore, "plan_upload")

    @property
    def execution_id(self) -> int:
        assert self.execution.id is not None
        return self.execution.id

    def stop(self, reason: str) -> None:
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    def detach(self) -> None:
        """Let go of a container that runs on by itself (remote); the next daemon re-attaches."""
        self._detached = True
        self._stop.set()

    @property
    def settled(self) -> bool:
        """Its result is recorded, or it was abandoned: its lease has gone to nobody by design."""
        return self._settled or self._abandoned

    @property
    def lost(self) -> bool:
        return self._lost

    def let_go(self) -> None:
        """Another replica took this execution over (this one was paused or cut off past its lease):
        stop following it and write nothing; the new owner re-attaches or settles it."""
        self._lost = True
        self.detach()

    def abandon(self, reason: str) -> None:
        """Stop the command without storing anything: the execution was requeued or failed elsewhere."""
        self._abandoned = True
        self.stop(reason)

    def usage_probe(self) -> tuple[Probe, SSHTransport | None] | None:
        """While its command runs: what the utilisation sampler reads for it, and where (None: this
        host; else its machine's SSH connection). None before the command starts, after it ends, and
        once this runner let it go."""
        running = self._running
        if running is None or self._command_ended or self._detached or self._abandoned:
            return None
        probe = getattr(running, "probe", None)
        return None if probe is None else (probe(), getattr(running, "transport", None))

    def run(self) -> Outcome:
        try:
            outcome = self._run()
        except LeaseLost as exc:
            log.warning("execution %s: %s; letting it go", self.execution_id, exc)
            self._lost = self._detached = True
            return Outcome(S.STARTED, "taken over by another replica", None)
        except Exception as exc:  # a bug or a broken host: never leave the execution hanging
            log.exception("execution %s failed inside vh-orch", self.execution_id)
            outcome = Outcome(S.ERROR, f"vh-orch failed while running it: {exc}", None)
        if self._detached:
            return outcome  # still running remotely: nothing to record, nothing to clean up
        if self._lost:
            return outcome  # its new owner records it (and cleans up)
        if not self._abandoned:
            self._record(outcome)
            failpoints.hit("after-result-recorded")
        # Only after the result is recorded: a daemon killed before this leaves a finished
        # container or folder behind, which the next daemon's sweep ends (never a result lost).
        self._cleanup_remote(self._spec)
        if self._cache is not None:
            try:
                self._cache.release()  # its cache entries may be evicted now
            except Exception as exc:
                log.warning("execution %s: releasing its input cache entries failed: %s", self.execution_id, exc)
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # the execution's folder, once no attempt has one in it
        except OSError:
            pass
        return outcome

    def _record(self, outcome: Outcome) -> None:
        """The attempt's result and outputs, in one transaction; a busy database is waited out."""
        for delay in (*RECORD_RETRY_S, None):
            try:
                # Counts only for this attempt: a requeued execution's old run has no say.
                self.store.finish_execution(self.execution_id, self.execution.attempt, outcome.status,
                                            outcome.reason, outcome.exit_code, outcome.outputs, row=self.execution)
                self._settled = True
                return
            except LeaseLost as exc:
                log.warning("execution %s: its result is not recorded here: %s", self.execution_id, exc)
                self._lost = True
                return
            except DBAPIError as exc:
                if delay is None:
                    # The next daemon pass finds it started with no runner and settles it.
                    log.error("execution %s: its result could not be recorded: %s", self.execution_id, exc)
                    return
                log.warning("execution %s: recording its result failed (%s); retrying in %s s",
                            self.execution_id, exc, delay)
                time.sleep(delay)

    def _step(self) -> Any:
        """The execution's step, from its commit's valohai.yaml (parsed once per runner)."""
        if self._parsed_step is None:
            config = parse_config(self.store.get_commit(self.execution.commit_id).config_yaml)
            self._parsed_step = get_step(config, self.execution.step)
        return self._parsed_step

    def _watcher(self) -> Callable[[dict[str, Any]], None] | None:
        """What checks each metadata point: the step's stop condition and its task's, if any."""
        from vh_orch.orchestrator.conditions import Condition

        e = self.execution
        conditions: list[tuple[Condition, bool]] = []
        step_condition = getattr(self._step(), "stop_condition", None)
        if e.task_id is not None:  # first: a point that meets both ends the whole task
            task_condition = self.store.task_stop_condition(e.task_id)
            if task_condition:
                conditions.append((Condition(task_condition, "the task's stop condition"), True))
        if step_condition:
            conditions.append((Condition(step_condition, "stop condition"), False))
        if not conditions:
            return None
        latest = dict(e.metadata_latest or {})

        def watch(point: dict[str, Any]) -> None:
            latest.update(point)
            if self._stop.is_set():
                return
            for condition, whole_task in conditions:
                if condition.met(latest):
                    reason = condition.reason(latest)
                    if whole_task:
                        self.store.stop_task(e.task_id, f"{reason} by execution #{e.counter}",  # type: ignore[arg-type]
                                             final="complete")
                    self.stop(reason)
                    return

        return watch

    def _run(self) -> Outcome:
        try:
            self._project, secrets = self._given_project or self.store.project_with_secrets(self.execution.project_id)
            self._secret_values = secret_values(self.settings.home, secrets)
        except ConfigError as exc:  # the installation's key is missing or another's: nothing runs
            return Outcome(S.ERROR, f"the project's secrets could not be read: {exc}", None)
        ingester = LogIngester(self.store, self.execution_id, self.metrics, on_metadata=self._watcher(),
                               max_metadata_keys=self.settings.max_metadata_keys,
                               secrets=self._secret_values.values(),
                               # A fresh start's row was read as it was claimed: its keys are current.
                               known_keys=None if self.reattach else list(self.execution.metadata_latest or {}))
        if self.reattach:
            spec = self._spec = self._attach_spec()
            running = self.runtime.attach(spec)  # type: ignore[attr-defined]
            if running is None:
                ingester.close(timeout=30)
                return Outcome(S.QUEUED, "its container was gone when vh-orch re-attached; requeued", None)
        else:
            try:
                spec = self._spec = self._prepare(ingester)
            except (InputFetchError, RuntimeFailure) as exc:
                ingester.add("stderr", f"vh-orch: {exc}")
                ingester.close(timeout=30)
                return Outcome(S.ERROR, str(exc), None)
            if self._stop.is_set() and not self._lost:
                ingester.close(timeout=30)
                return Outcome(S.STOPPED, self._stop_reason, None)
            # Fetching inputs takes a while: a replica paused meanwhile past its lease must not start a
            # command that its successor already settled (requeued, or run again elsewhere).
            failpoints.hit("command-start")
            self._still_held(ingester)
            try:
                running = self.runtime.start(spec)
            except RuntimeFailure as exc:
                ingester.close(timeout=30)
                return Outcome(S.ERROR, str(exc), None)
            if not hasattr(self.runtime, "attach"):
                # On this host nobody re-attaches: a take-over during the start ended nothing (the
                # command did not exist yet), so the command ends here.
                try:
                    self._still_held(ingester)
                except LeaseLost:
                    running.stop(0)
                    running.wait()
                    raise
        self._running = running
        timestamped = getattr(running, "timestamped", False)
        # A re-attached container's output comes again from its start: the lines stored already are skipped.
        stored = self.store.command_lines(self.execution_id) if self.reattach else {}
        ingester.follow(running.stdout, "stdout", timestamped, skip=stored.get("stdout", 0))
        ingester.follow(running.stderr, "stderr", timestamped, skip=stored.get("stderr", 0))
        exit_code, deadline = self._wait(running, ingester)
        self._command_ended = True
        if getattr(running, "never_started", False):
            # Its launch on the host was cut before the container started (remote_logs.py): nothing ran.
            ingester.close(timeout=30)
            return Outcome(S.QUEUED, "its launch on the machine was cut before the container started "
                                     "(nothing ran); requeued", None)
        if self._detached:
            release = getattr(running, "release", None)
            if release is not None:  # it runs on: stop following it
                ingester.let_go()  # its next follower reads its output again and skips what is stored
                release()
            ingester.close(timeout=1)
            return Outcome(S.STARTED, "detached", None)
        read_all = ingester.wait_readers(timeout=READ_TAIL_S)
        if not read_all:
            # A child that outlived the command still holds its output open: end it, then read on.
            running.stop(0)
            read_all = ingester.wait_readers(timeout=10)
        if self._abandoned:
            ingester.close(timeout=60)
            return Outcome(S.STOPPED, self._stop_reason, exit_code)
        out_of_memory = running.out_of_memory and exit_code != VANISHED
        if out_of_memory and exit_code == 0:
            ingester.add("stderr", "vh-orch: the kernel killed a process of this execution for want of memory; "
                                   "the command went on and exited 0")
        if self._direct:
            outputs, problem = self._store_outputs_direct(spec, ingester)
        else:
            outputs, problem = self._store_outputs(spec, ingester)
        if self.metrics is not None:
            self.metrics.outputs_stored(o.size for o in outputs)
        # Every line read is in the database before the result is: `complete` means all of it.
        stored_all = ingester.close(timeout=LOG_STORE_TIMEOUT_S if read_all else 10)
        failpoints.hit("after-outputs-uploaded")
        problem = problem or getattr(running, "problem", None)
        if not read_all:
            problem = problem or "its log could not be read to its end"
        elif not stored_all:
            problem = problem or "not every log line could be stored"

        if self._stop.is_set() and deadline is None:
            return Outcome(S.STOPPED, self._stop_reason, exit_code, outputs)
        if deadline is not None:
            return Outcome(S.ERROR, deadline, exit_code, outputs)
        if exit_code == VANISHED:
            return Outcome(S.ERROR, "its container vanished before it ended (removed behind vh-orch's back?); "
                                    "its exit status is unknown", None, outputs)
        if out_of_memory and exit_code != 0:
            return Outcome(S.ERROR, self._out_of_memory(spec), exit_code, outputs)
        if problem is not None:
            return Outcome(S.ERROR, problem, exit_code, outputs)
        if exit_code == 0:
            return Outcome(S.COMPLETE, None, 0, outputs)
        return Outcome(S.ERROR, f"the command exited with code {exit_code}", exit_code, outputs)

    def _out_of_memory(self, spec: RunSpec) -> str:
        """The reason of an execution the kernel killed for want of memory."""
        if self.runtime.name == "process":
            return ("out of memory: the kernel killed the command (SIGKILL, and an out-of-memory kill was "
                    "counted while it ran)")
        limit = spec.isolation.limits.memory_mb
        if limit is None:
            return "out of memory: the kernel killed the container's command (its machine ran short of memory)"
        return f"out of memory: the container was killed at its {limit:g} MB limit"

    def _cleanup_remote(self, spec: RunSpec | None) -> None:
        cleanup = getattr(self.runtime, "cleanup", None)
        if cleanup is not None and spec is not None:
            cleanup(spec)

    def _attach_spec(self) -> RunSpec:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "outputs").mkdir(exist_ok=True)
        e = self.execution
        try:
            isolation = self._isolation()  # not applied (its container runs already): what holds it
        except RuntimeFailure:
            isolation = Isolation()
        return RunSpec(execution_id=self.execution_id, command=e.command, folder=self.folder, env={},
                       cluster_id=self.cluster_id, attempt=e.attempt, image=e.image,
                       pull_policy=e.pull_policy or "if-missing", isolation=isolation)

    def _prepare(self, ingester: LogIngester) -> RunSpec:
        execution = self.execution
        if execution.restricted and self.runtime.name == "process":
            # `auto` found no Docker engine: a restricted execution waits for none and never runs unisolated.
            raise RuntimeFailure("it was submitted through the API and would have run as a plain process on the "
                                 "daemon's host (no Docker engine answered), which only administrators' executions "
                                 "may; run it again once the engine answers")
        shutil.rmtree(self.folder, ignore_errors=True)
        for name in FOLDERS:
            (self.folder / name).mkdir(parents=True)
        commit = self.store.get_commit(execution.commit_id)
        project = self._project
        assert project is not None  # read as the run began (_run)
        repository = self.folder / "repository"
        if commit.kind == "adhoc":
            extract_adhoc(Path(commit.archive_path or ""), repository)
        else:
            extract_git(Path(project.mirror_path or ""), commit.identifier, repository)

        visible = self.runtime.visible_dirs(self.folder)
        filenames = {name: inp.filename for name, inp in self._step().inputs.items()}
        planned, inputs_config = plan_inputs(execution.inputs, filenames, visible["inputs"], self._resolve_datum)
        for name in execution.inputs:
            (self.folder / "inputs" / name).mkdir(parents=True, exist_ok=True)
        config = self.folder / "config"
        _write_json(config / "parameters.json", execution.parameters)
        _write_json(config / "execution.json", self._execution_info(project.name, commit.identifier))
        if self.runtime.name != "process":  # a process runs as the daemon's user, who owns the folders
            open_to_image_user(self.folder)

        env = {"PYTHONUNBUFFERED": "1"}
        env.update({k: str(v) for k, v in execution.environment_variables.items()})
        secret_env: dict[str, str] = {}
        for name in merge_secrets(secret_env, self._secret_values, execution.environment_variables):
            ingester.add("stderr", f"vh-orch: the execution's own environment variable {name} is used, not the "
                                   "project's secret of that name")
        env.update(
            {
                "VH_JOB_ID": str(execution.id),
                "VH_EXECUTION_ID": str(execution.id),
                "VH_PROJECT_ID": str(execution.project_id),
                "VH_CONFIG_DIR": visible["config"],
                "VH_INPUTS_DIR": visible["inputs"],
                "VH_OUTPUTS_DIR": visible["outputs"],
                "VH_REPOSITORY_DIR": visible["repository"],
            }
        )
        spec = RunSpec(
            execution_id=self.execution_id,
            command=execution.command,
            folder=self.folder,
            env=env,
            cluster_id=self.cluster_id,
            attempt=execution.attempt,
            image=execution.image,
            pull_policy=execution.pull_policy or "if-missing",
            labels={
                "vh-orch.project": project.name,
                "vh-orch.counter": str(execution.counter),
            },
            cache_key=commit.identifier,
            isolation=self._isolation(),
            secret_env=secret_env,
            registry_auth=self._registry_auth(),
        )
        if spec.isolation.limits and self.runtime.name == "process":
            ingester.add("stderr", "vh-orch: the process runtime does not enforce the step's resources "
                                   "(cpu, memory); run it in a container for that")
        self.runtime.prepare(spec)
        spec = self._place_inputs(spec, planned)
        _write_json(config / "inputs.json", inputs_config)
        os.chmod(config / "inputs.json", 0o644)  # for the image's user, whoever it is (open_to_image_user)
        if isinstance(self.runtime, RemoteRuntime):
            self.runtime.put_file(spec, "config/inputs.json", (config / "inputs.json").read_bytes())
        return spec

    def _registry_auth(self) -> RegistryAuth | None:
        """The login a pull of the execution's image uses (a private registry's stored credentials), or None."""
        e = self.execution
        if self.runtime.name == "process":
            return None
        try:
            return registry_auth_for(self.store, self.settings.home, e.image, e.environment_id)
        except ConfigError as exc:
            raise RuntimeFailure(f"the image's registry credentials could not be read: {exc}") from None

    def _isolation(self) -> Isolation:
        """How the container is confined: its environment's settings, its step's resources, its GPUs."""
        try:
            limits = step_limits(self._step())
        except UserInputError as exc:  # a commit submitted before the check: say so, never run it unbounded
            raise RuntimeFailure(str(exc)) from None
        settings = self._env_settings
        return Isolation(pids_limit=settings.pids_limit, network=settings.container_network, limits=limits,
                         gpus=tuple(self.execution.gpu_indices or ()))

    def _input_cache(self) -> InputCache:
        """The input cache of the machine the execution runs on (a folder of its workdir; for the local
        runtimes, the environment's folder on this host)."""
        if self._cache is None:
            e = self.execution
            pin = pin_name(self.cluster_id, self.execution_id, e.attempt)
            if isinstance(self.runtime, RemoteRuntime):
                self._cache = InputCache(self.runtime.shell(), self.runtime.input_cache_root(),
                                         cache_bound_bytes(self._env_settings.input_cache_gb), pin)
            else:
                root = self.settings.input_cache_dir / f"env-{e.environment_id}"
                self._cache = InputCache(LocalShell(), str(root), cache_bound_bytes(self._env_settings.input_cache_gb),
                                         pin)
        return self._cache

    def _place_inputs(self, spec: RunSpec, planned: list[InputFile]) -> RunSpec:
        """Every input file into the execution's inputs/ on the machine, through its input cache: a
        file it holds moves no byte; one it lacks comes from a signed URL (cloud VMs, objects of the
        datastore) or from the daemon. Up to INPUT_WORKERS files at once. A container mounts cached
        files read-only (the spec returned says which); the process runtime gets copies."""
        if not planned:
            return spec
        mount = self.runtime.name == "docker"
        cache = self._input_cache()
        remote = isinstance(self.runtime, RemoteRuntime)
        dest_root = self.runtime.remote_path(spec, "inputs") if remote else str(self.folder / "inputs")
        staging = self.folder / ".fetch"

        http = self._restricted_http()

        def place(index: int, file: InputFile) -> Placed:
            if http is not None and file.datum is None:
                self._check_restricted_source(file)
            identity = identify(file.source_uri, file.datum, self._datastore_setting, http)
            url = self._signed_get(file.source_uri) if self._direct else None

            def source() -> tuple[int, Iterator[bytes]]:
                if file.source_uri.startswith("file://"):
                    return file_source(file_uri_path(file.source_uri))
                # Through the daemon, never onto its disk, where the source says its size up front.
                streamed = stream_file(file.source_uri, file.name, self._datastore_setting, http)
                if streamed is not None:
                    return streamed
                staging.mkdir(exist_ok=True)
                tmp = staging / str(index)
                fetch_file(file.source_uri, tmp, file.name, self._datastore_setting, http)
                return file_source(tmp, remove=True)

            try:
                placed = cache.place(identity, f"{dest_root}/{file.rel_path}", url, source, mount=mount)
            except (InputCacheError, SSHError, OSError) as exc:
                raise InputFetchError(f"input {file.name!r}: cannot fetch {file.entry['uri']}: {exc}") from None
            file.complete(placed.size, placed.sha256)
            if "CORRUPT" in placed.events:
                log.warning("execution %s: the cached copy of %s on the machine was damaged; fetched it again",
                            self.execution_id, file.entry["uri"])
            return placed

        with ThreadPoolExecutor(max_workers=min(INPUT_WORKERS, len(planned))) as pool:
            results = list(pool.map(place, range(len(planned)), planned))
        shutil.rmtree(staging, ignore_errors=True)
        hits = sum(1 for p in results if p.hit)
        sent = sum(p.sent for p in results)
        fetched = sum(p.size for p in results if not p.hit)
        log.info("execution %s: %d input file(s), %d from the machine's cache, %d bytes fetched (%d sent by "
                 "the daemon)", self.execution_id, len(results), hits, fetched, sent)
        if self.metrics is not None:
            self.metrics.inputs_placed(hits, len(results) - hits, fetched)
        if self.execution.machine_id is not None:
            self.store.record_input_cache(self.execution.machine_id, hits, len(results) - hits,
                                          results[-1].cache_bytes)
        mounts = tuple((p.mount, f"{CONTAINER_ROOT}/inputs/{f.rel_path}") for p, f in zip(results, planned)
                       if p.mount is not None)
        return dataclasses.replace(spec, mounts=mounts) if mounts else spec

    def _restricted_http(self) -> Any:
        """A restricted execution's HTTP session, guarded by the fetch policy; None for anyone else's."""
        if not self.execution.restricted:
            return None
        from vh_orch.storage.fetch_policy import FetchPolicy, guarded_session, parse_networks

        return guarded_session(FetchPolicy(parse_networks(self.settings.allow_fetch)))

    def _check_restricted_source(self, file: InputFile) -> None:
        """Checked again when fetched (a grant may have been withdrawn since the submission): a restricted
        execution reads no file of this host and only the buckets its project was granted, or outputs its
        user may see. http(s) is guarded at every connection."""
        from vh_orch.orchestrator.access import check_bucket_input
        from vh_orch.errors import UserInputError

        uri = file.source_uri
        scheme = uri.partition("://")[0]
        if scheme == "file":
            raise InputFetchError(f"input {file.name!r}: a file of the daemon's host is not an input an execution "
                                  "submitted through the API may read")
        if scheme not in ("s3", "gs"):
            return
        e = self.execution
        user = self.store.find_user(e.user or "")

        def output_visible(uri: str) -> bool:
            return user is not None and any(
                self.store.can_see(user, self.store.get_execution(o.execution_id).project_id)
                for o in self.store.outputs_at(uri))

        try:
            check_bucket_input(file.name, uri, self.store.get_project_by_id(e.project_id).allowed_buckets or [],
                               output_visible)
        except UserInputError as exc:
            raise InputFetchError(str(exc)) from None

    def _signed_get(self, uri: str) -> str | None:
        """A signed URL the machine downloads an object of our object store with; None for anything else."""
        presign = getattr(self.datastore, "presigned_get", None)
        scheme = getattr(self.datastore, "scheme", None)
        if presign is None or not scheme or not uri.startswith(f"{scheme}://"):
            return None
        return presign(uri)  # type: ignore[no-any-return]

    def _resolve_datum(self, datum_id: str) -> DatumRef:
        output = self.store.get_output(datum_id)
        return output.uri, output.name, output.size, output.sha256

    def _execution_info(self, project_name: str, commit_identifier: str) -> dict[str, Any]:
        e = self.execution
        return {
            "valohai.execution-id": str(e.id),
            "valohai.execution-counter": e.counter,
            "valohai.execution-step": e.step,
            "valohai.execution-title": e.title,
            "valohai.execution-image": e.image,
            "valohai.execution-created-at": iso(e.created_at),
            "valohai.project-id": str(e.project_id),
            "valohai.project-name": project_name,
            "valohai.commit-identifier": commit_identifier,
            "valohai.environment-id": str(e.environment_id),
            "valohai.runtime": self.runtime.name,
            "valohai.creator-name": e.user,
        }

    def _no_output_timeout_s(self) -> float | None:
        """The step's no-output-timeout in seconds; None: none (unset, or 0)."""
        timeout = getattr(self._step(), "no_output_timeout", None)
        return timeout.total_seconds() if timeout else None

    def _wait(self, running: RunningCommand, ingester: LogIngester) -> tuple[int, str | None]:
        """Wait for the command, handling stop requests, the time limit and the no-output timeout. Returns
        its exit code, and why a deadline stopped it (None: none did).

        Both deadlines count from here: the start, or a re-attach after a daemon restart (which cannot
        know what the command printed while no daemon read it, and so never stops it for that). After a
        re-attach the first silence allowed is at least REATTACH_SILENCE_S: the lines printed while no
        daemon read them come through the re-opened log stream, which can take seconds on a busy machine."""
        limit = self.execution.time_limit_s
        silence = self._no_output_timeout_s()
        started = time.monotonic()
        next_check = started + STATUS_CHECK_S  # a stop asked for before the start reaches runners too (stop_requested)
        deadline: str | None = None
        poll = POLL_S / 8  # a short command is seen to end soon: polls of 6, 12, 25, then 50 ms
        while True:
            code = running.poll()
            if code is not None:
                return code, deadline
            now = time.monotonic()
            if now >= next_check:
                next_check = now + STATUS_CHECK_S
                current = self.store.get_execution(self.execution_id)
                if current.status == S.STOPPING:  # keep why (median stopping, a task's stop...)
                    self.stop(current.status_reason or "stopped by request")
            if deadline is None and not self._stop.is_set():
                if limit and now - started > limit:
                    deadline = f"time limit of {limit:g} s exceeded; the command was stopped"
                elif (silence and not running.output_ended
                      and self._silent_for_too_long(now, started, silence, ingester.last_output)):
                    deadline = f"no output for {silence:g} s (no-output-timeout); the command was stopped"
                if deadline is not None:
                    self._stop.set()
            if self._detached:
                return -2, None
            if self._stop.is_set():
                running.stop(self.settings.stop_grace_s)
                return running.wait(), deadline
            self._stop.wait(poll)
            poll = min(POLL_S, poll * 2)

    def _still_held(self, ingester: LogIngester) -> None:
        """Raise LeaseLost (its log closed) once another replica holds this execution: let go by the
        heartbeat, or its lease row taken over (the fenced store's check)."""
        try:
            if self._lost:
                raise LeaseLost(f"exec:{self.execution_id}: another replica took it over")
            self.store.check_fence()
        except LeaseLost:
            ingester.close(timeout=1)
            raise

    def _silent_for_too_long(self, now: float, started: float, silence: float, last_output: float | None) -> bool:
        if last_output is not None:
            return now - max(started, last_output) > silence
        return now - started > (max(silence, REATTACH_SILENCE_S) if self.reattach else silence)

    def _store_outputs_direct(self, spec: RunSpec, ingester: LogIngester) -> tuple[list[Output], str | None]:
        """The machine uploads outputs/ straight to the object store through signed URLs; the
        daemon only signs and completes. Returns the outputs to record, and a problem or None."""
        from vh_orch.storage.transfer import parse_etags, parse_files, upload_script

        runtime: Any = self.runtime
        datastore: Any = self.datastore
        plans = []
        rows: list[Output] = []
        try:
            files, others = runtime.list_outputs(spec)
            for rel in others:
                ingester.add("stderr", f"vh-orch: output {rel!r} is not a regular file; not stored")
            described = metadata_files(rel for rel, _ in files)
            sources = read_remote(runtime.run_script, runtime.remote_path(spec, "outputs"),
                                  [(rel, size) for rel, size in files if rel in described])
            files = [(rel, size) for rel, size in files if rel not in described]
            if not files:
                return [], None
            plans = [(rel, datastore.plan_upload(rel, size)) for rel, size in files]
            out = runtime.run_script(upload_script(runtime.remote_path(spec, "outputs"), plans))
            etags, sums = parse_etags(out), parse_files(out)
            for index, (rel, plan) in enumerate(plans):
                datastore.complete_upload(plan, etags.get(index, {}))
                size, digest = sums[index]
                rows.append(Output(id=plan.datum_id, execution_id=self.execution_id, name=rel, size=size,
                                   sha256=digest, uri=plan.uri))
                failpoints.hit("output-upload")
            describe(rows, sources, lambda line: ingester.add("stderr", line), ingester.masked_forms)
        except Exception as exc:  # transport, signing or the store: the execution says what
            for _, plan in plans:
                try:
                    datastore.abort_upload(plan)
                except Exception:
                    log.warning("could not abort the upload of %s", plan.uri)
            return [], f"storing outputs failed: {exc}"
        return rows, None

    def _store_outputs(self, spec: RunSpec, ingester: LogIngester) -> tuple[list[Output], str | None]:
        """Bring outputs/ back from the machine (if remote) and store every regular file in it, a few at
        once, each retried when its upload breaks. Returns the outputs to record (every one stored, even
        when another failed) and a problem or None."""
        collect = getattr(self.runtime, "collect", None)
        if collect is not None:
            try:
                collect(spec)
            except Exception as exc:  # any transport trouble becomes the execution's reason
                return [], f"collecting outputs failed: {exc}"
        outputs_dir = self.folder / "outputs"
        files: list[tuple[Path, str]] = []
        for root, dirs, names in os.walk(outputs_dir):
            dirs.sort()
            for name in sorted(names):
                path = Path(root) / name
                rel = path.relative_to(outputs_dir).as_posix()
                if path.is_symlink() or not path.is_file():
                    ingester.add("stderr", f"vh-orch: output {rel!r} is not a regular file; not stored")
                    continue
                files.append((path, rel))
        # Output metadata describes the outputs and is not stored as one (as on Valohai).
        described = metadata_files(rel for _, rel in files)
        sources = read_local(outputs_dir, [(rel, _size(path)) for path, rel in files if rel in described])
        files = [(path, rel) for path, rel in files if rel not in described]
        if not files:
            return [], None
        datastore = self.datastore

        def store(item: tuple[Path, str]) -> Output:
            path, rel = item
            for delay in (*OUTPUT_RETRY_S, None):
                try:
                    stored = datastore.put(path, rel)
                    break
                except (OSError, TransientCloudError) as exc:  # a cut connection, a busy store: again
                    if delay is None:
                        raise
                    log.info("execution %s: storing output %s failed (%s); again in %s s", self.execution_id, rel,
                             exc, delay)
                    time.sleep(delay)
            failpoints.hit("output-upload")
            return Output(id=stored.datum_id, execution_id=self.execution_id, name=rel, size=stored.size,
                          sha256=stored.sha256, uri=stored.uri)

        # Files go up OUTPUT_WORKERS at a time (a store's multipart uploads go in parts of their own).
        rows: list[Output] = []
        problem = None
        with ThreadPoolExecutor(max_workers=min(OUTPUT_WORKERS, len(files))) as pool:
            futures = [pool.submit(store, item) for item in files]
            for future in futures:
                try:
                    rows.append(future.result())
                except (OSError, VhOrchError) as exc:
                    problem = problem or f"storing outputs failed: {exc}"
        describe(rows, sources, lambda line: ingester.add("stderr", line), ingester.masked_forms)
        return rows, problem


def _size(path: Path) -> int:
    """A file's size; 0 when it is gone (reading it then says so)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True))
