"""The state vh-orch keeps, as SQLModel tables.

Times are aware UTC datetimes (SQLModel stores them as UTC); `timeutil.iso` renders them
with a trailing Z. JSON columns hold plain dicts and lists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, Text, UniqueConstraint, false
from sqlmodel import Field, SQLModel

from vh_orch.timeutil import utcnow
from vh_orch.values import ExecutionStatus, MachineState, NodeStatus, PipelineStatus, TaskStatus


class User(SQLModel, table=True):
    """Someone who uses vh-orch through its HTTP API and web UI. Secrets only as hashes: the password
    as an argon2 hash (None: no password, tokens only), API tokens in `api_token`."""

    __tablename__ = "user_account"  # `user` is a reserved word in PostgreSQL

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    password_hash: str | None = None
    is_admin: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """An API token, as the sha256 of the token (it is 32 random bytes: no KDF needed to keep it)."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    digest: str = Field(unique=True)
    kind: str = Field(default="api", sa_column_kwargs={"server_default": "api"})  # "api", or "session" (a browser's)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None  # sessions end; API tokens last until revoked


class ProjectMember(SQLModel, table=True):
    """A user a project is shared with (its owner is `project.owner_id`)."""

    __tablename__ = "project_member"

    project_id: int = Field(foreign_key="project.id", primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", primary_key=True, index=True)


class Project(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    owner_id: int = Field(foreign_key="user_account.id", index=True)
    repo_url: str | None = None
    mirror_path: str | None = None
    execution_counter: int = 0
    task_counter: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    pipeline_counter: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = Field(default_factory=utcnow)
    # s3:// and gs:// locations (a bucket, or a bucket/prefix) the operator lets this project's restricted
    # executions read with the daemon's credentials (`project update --allow-bucket`).
    allowed_buckets: list[str] = Field(default_factory=list,
                                       sa_column=Column(JSON, nullable=False, server_default="[]"))
    # A private repository: the project's own deploy key (its private half encrypted with the
    # installation's key, vh_orch/keyring.py), or an HTTPS token (encrypted); the Git server's host key,
    # given or learnt on the first fetch, is pinned (`known_hosts` line).
    deploy_key_public: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    deploy_key_private: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    repo_token: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    git_host_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class ProjectSecret(SQLModel, table=True):
    """A value every execution of the project gets as an environment variable; stored encrypted
    (vh_orch/keyring.py), never shown again, masked in what executions print."""

    __tablename__ = "project_secret"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str
    value: str = Field(sa_column=Column(Text, nullable=False))  # encrypted
    created_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class RegistryCredential(SQLModel, table=True):
    """How machines log in to a private image registry (HOST, e.g. registry.example.com:5000) for a pull:
    for every environment (environment_id None) or one; the password encrypted."""

    __tablename__ = "registry_credential"
    __table_args__ = (UniqueConstraint("host", "environment_id"),)

    id: int | None = Field(default=None, primary_key=True)
    host: str = Field(index=True)
    environment_id: int | None = Field(default=None, foreign_key="environment.id")
    username: str
    password: str = Field(sa_column=Column(Text, nullable=False))  # encrypted
    created_at: datetime = Field(default_factory=utcnow)


class Webhook(SQLModel, table=True):
    """Where a project's ended executions, tasks and pipelines are POSTed; the signing secret encrypted."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # encrypted
    format: str = "json"  # or "slack"
    restricted: bool = Field(default=False, sa_column_kwargs={"server_default": false()})  # made through the API
    created_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One event for one webhook: its body, made once, and each try's outcome; retried with back-off
    until delivered or out of tries (rows, so deliveries survive a restart)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
                      UniqueConstraint("webhook_id", "event_id"))

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(foreign_key="webhook.id", index=True)
    event: str  # execution.ended, task.ended, pipeline.ended
    event_id: str  # a uuid: the receiver's de-duplication key (X-Vh-Orch-Event-Id)
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = "pending"  # pending, delivered, failed (out of tries)
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    tries: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None


class Commit(SQLModel, table=True):
    """An exact snapshot: a Git sha, or the content hash of an ad-hoc folder."""

    __table_args__ = (UniqueConstraint("project_id", "kind", "identifier"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    kind: str  # "git" or "adhoc"
    identifier: str  # the sha, or the sha256 of the ad-hoc archive
    ref: str | None = None  # what the user asked for (branch, tag, folder)
    archive_path: str | None = None  # ad-hoc: where the tarball is kept
    config_yaml: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Environment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    cloud: str
    min_scale: int = 0
    max_scale: int = 1
    idle_timeout_s: float = 600.0
    instance_type: str | None = None
    region: str | None = None
    spot: bool = False
    price_per_hour: float = 0.0
    slots: int = 1
    max_attempts: int = 3
    # Cloud-specific and runtime settings (e.g. {"runtime": "auto", "pull_policy": "if-missing"}).
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Set when `env rm` finished: the row stays for the executions that ran on it.
    removed_at: datetime | None = None


class Machine(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    environment_id: int = Field(foreign_key="environment.id", index=True)
    state: str = Field(default=MachineState.REQUESTED, index=True)
    reason: str | None = None
    launch_token: str | None = None
    instance_id: str | None = None
    address: str | None = None
    bootstrap_step: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # When the machine entered its current state (deadlines count from here).
    state_changed_at: datetime = Field(default_factory=utcnow)
    idle_since: datetime | None = None
    terminated_at: datetime | None = None
    # Termination: how often it failed, when to try again, and the cloud's last word.
    terminate_attempts: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None
    # Its input cache: input files found there (hits) or fetched into it (misses), its size when last used.
    input_cache_hits: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    input_cache_misses: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    input_cache_bytes: int | None = Field(default=None, sa_type=BigInteger)
    # Its NVIDIA GPUs, found when it was set up (nvidia-smi) or expected from its instance type
    # before that; 0: none. gpu_model: the first GPU's name ("NVIDIA A10G").
    gpus: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    gpu_model: str | None = None


class Installation(SQLModel, table=True):
    """This installation's identity: its cluster id tags every instance it launches."""

    id: int | None = Field(default=None, primary_key=True)
    cluster_id: str
    created_at: datetime = Field(default_factory=utcnow)


class LaunchFailure(SQLModel, table=True):
    """A failed launch: capacity, quota, transient or fatal, with the cloud's message."""

    __tablename__ = "launch_failure"
    __table_args__ = (Index("ix_launch_failure_env_time", "environment_id", "time"),)

    id: int | None = Field(default=None, primary_key=True)
    environment_id: int = Field(foreign_key="environment.id")
    time: datetime = Field(default_factory=utcnow)
    kind: str
    zone: str | None = None
    instance_type: str | None = None
    message: str = Field(sa_column=Column(Text, nullable=False))


class Quota(SQLModel, table=True):
    """How many executions a user may have queued or running at once; user `*` is the default."""

    user: str = Field(primary_key=True)
    max_concurrent: int


class Budget(SQLModel, table=True):
    """A spending limit per period for a user (`user`) or a project (`project_id`): when their spend in
    the period reaches it, their new executions wait as `created`; `hard` stops running ones too."""

    __table_args__ = (UniqueConstraint("user", "project_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user: str | None = Field(default=None, index=True)
    project_id: int | None = Field(default=None, foreign_key="project.id", index=True)
    usd: float
    period: str = "month"  # month, week (from Monday) or day, in UTC
    hard: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # The start of the period whose 80 % warning was sent (one per period).
    warned_period: datetime | None = None


class Execution(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("project_id", "counter"),
        Index("uq_execution_task_index", "task_id", "task_index", unique=True),
        Index("ix_execution_queue", "environment_id", "status", "priority", "id"),
        Index("uq_execution_pipeline_node", "pipeline_node_id", "pipeline_attempt", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    counter: int
    commit_id: int = Field(foreign_key="commit.id")
    step: str
    title: str | None = None
    image: str | None = None
    pull_policy: str | None = None
    command: str = Field(sa_column=Column(Text, nullable=False))
    parameters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # {"name": ["url", ...]}: what the user asked for; inputs.json records what was fetched.
    inputs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    environment_variables: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    time_limit_s: float | None = None
    environment_id: int = Field(foreign_key="environment.id")
    machine_id: int | None = Field(default=None, foreign_key="machine.id")
    runtime: str | None = None
    status: str = Field(default=ExecutionStatus.CREATED, index=True)
    status_reason: str | None = None
    exit_code: int | None = None
    priority: int = 0
    user: str | None = None
    attempt: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    queued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # The last value of every metadata key, merged in order; kept up to date on ingestion.
    metadata_latest: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Highest event sequence number stored (log lines and status changes share one sequence).
    last_seq: int = 0
    # A task's child: its task and its place in it (unique, so that no child is created twice).
    task_id: int | None = Field(default=None, foreign_key="task.id", index=True)
    task_index: int | None = None
    # Submitted by a user who is not an administrator (the HTTP API, the web UI): it runs only isolated
    # (never as a process on the daemon's host) and fetches its inputs under the fetch policy.
    restricted: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    # GPUs asked for (valohai.yaml `resources.devices: {nvidia.com/gpu: N}`, the environment's default,
    # or `--gpus N`), and the indices on its machine it was given when it was dispatched.
    gpus: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    gpu_indices: list[int] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The most memory its samples saw (bytes), kept when its samples are thinned or removed.
    peak_memory_bytes: int | None = Field(default=None, sa_type=BigInteger)
    # A pipeline node's execution, and which try of the node it is (unique together: a node's
    # execution is never made twice, whatever crashes between the insert and the node's update).
    # No foreign key: the node refers to its execution, and a cycle of keys would leave no order
    # to create or drop the tables in.
    pipeline_node_id: int | None = None
    pipeline_attempt: int | None = None
    # "Run again": the execution this one was made from (its page links both ways).
    rerun_of_id: int | None = Field(default=None, foreign_key="execution.id", index=True)
    # What its latest attempt cost (orchestrator/costs.py), stored when it ended; None: not ended, or
    # ended before costs were kept (worked out from the rows when asked).
    cost_usd: float | None = None


class MetadataNumber(SQLModel, table=True):
    """An execution's latest value of a metadata key, where it is a JSON number: what a list sorted by
    that key reads off its index in order. Database triggers keep these rows equal to `metadata_latest`
    on every write to it (migration 0015); nothing in Python writes them."""

    __tablename__ = "metadata_number"
    __table_args__ = (Index("ix_metadata_number_sort", "key", "project_id", "value", "execution_id"),)

    execution_id: int = Field(sa_column=Column(Integer, ForeignKey("execution.id", ondelete="CASCADE"),
                                               primary_key=True))
    key: str = Field(primary_key=True)
    project_id: int
    value: float


class Task(SQLModel, table=True):
    """A collection of executions of one step (most often a hyperparameter search).

    `spec` is the validated definition (orchestrator/tasks/spec.py TaskSpec as JSON): the search, its
    parameters, limits and conditions; `template` what every child shares (command inputs,
    environment variables, image...). Children are executions with `task_id` and `task_index`."""

    __table_args__ = (
        UniqueConstraint("project_id", "counter"),
        Index("uq_task_pipeline_node", "pipeline_node_id", "pipeline_attempt", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    counter: int
    commit_id: int = Field(foreign_key="commit.id")
    step: str
    name: str | None = None  # the valohai.yaml task it came from, if any
    title: str | None = None
    type: str
    status: str = Field(default=TaskStatus.CREATED, index=True)
    status_reason: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    template: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    environment_id: int = Field(foreign_key="environment.id")
    user: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # No longer written (kept for old databases): what median stopping saved is counted from the
    # children as they ended (tasks.task_summary), since a child the rule stops may still complete.
    pruned: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    saved_seconds: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})
    # A pipeline's task node: as for executions.
    pipeline_node_id: int | None = None
    pipeline_attempt: int | None = None


class Pipeline(SQLModel, table=True):
    """A DAG of executions and tasks (valohai.yaml `- pipeline:`, or the client's converted payload).

    `spec` is the checked definition (orchestrator/pipelines/spec.py PipelineSpec as JSON), with the
    pipeline parameters already applied to the nodes' templates; its nodes are `pipeline_node` rows."""

    __table_args__ = (UniqueConstraint("project_id", "counter"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    counter: int
    commit_id: int = Field(foreign_key="commit.id")
    name: str | None = None  # the valohai.yaml pipeline it came from, if it says
    title: str | None = None
    status: str = Field(default=PipelineStatus.CREATED, index=True)
    status_reason: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    user: str | None = None
    # Submitted through the API or web by a user who is not an administrator: its nodes run restricted.
    restricted: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None


class PipelineNode(SQLModel, table=True):
    """One node of a pipeline: its definition (`spec`: PipelineSpec's node as JSON) and where it is.

    A node's work is an execution or a task with this node's id and `attempt` (unique there), so the
    engine finds what it started even if it died before writing it here."""

    __tablename__ = "pipeline_node"
    __table_args__ = (UniqueConstraint("pipeline_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    pipeline_id: int = Field(foreign_key="pipeline.id", index=True)
    name: str
    type: str  # execution | task | mimic
    status: str = Field(default=NodeStatus.CREATED)
    status_reason: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempt: int = 0  # 0 the first try; `on-error: retry` makes a second
    execution_id: int | None = Field(default=None, foreign_key="execution.id")
    task_id: int | None = Field(default=None, foreign_key="task.id")
    # reuse-executions / a mimic node: the earlier execution whose results this node stands for
    reused_execution_id: int | None = Field(default=None, foreign_key="execution.id")
    approved_by: str | None = None  # who let a node held by `require-approval` start
    started_at: datetime | None = None
    ended_at: datetime | None = None


class Dataset(SQLModel, table=True):
    """A named collection of versions of files, owned by a project (`dataset://NAME/VERSION`)."""

    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str
    created_at: datetime = Field(default_factory=utcnow)


class DatasetVersion(SQLModel, table=True):
    """A fixed set of outputs, made at the end of the execution whose output metadata named it."""

    __tablename__ = "dataset_version"
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True)
    name: str
    execution_id: int | None = Field(default=None, foreign_key="execution.id")
    created_at: datetime = Field(default_factory=utcnow)


class DatasetFile(SQLModel, table=True):
    """An output in a dataset version."""

    __tablename__ = "dataset_file"

    version_id: int = Field(foreign_key="dataset_version.id", primary_key=True)
    output_id: str = Field(foreign_key="output.id", primary_key=True)


class DatumAlias(SQLModel, table=True):
    """A project's name for one output (`valohai.alias`), usable as `datum://NAME`; moved by each new use."""

    __tablename__ = "datum_alias"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str
    output_id: str = Field(foreign_key="output.id")
    updated_at: datetime = Field(default_factory=utcnow)


class ExecutionEvent(SQLModel, table=True):
    """A status change (kind "status"), or a log line (kind "log", stream stdout/stderr) stored
    before log lines went into LogBlock rows; readers see both as events, in seq order."""

    __tablename__ = "execution_event"
    __table_args__ = (Index("ix_execution_event_seq", "execution_id", "seq", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    execution_id: int = Field(foreign_key="execution.id")
    seq: int
    time: datetime
    kind: str
    stream: str | None = None
    text: str = Field(sa_column=Column(Text, nullable=False))


class LogBlock(SQLModel, table=True):
    """Consecutive log lines of one stream, stored together in one row (seq first_seq..last_seq).

    texts: the lines joined by "\n" (a line never holds one; a block of one line is its text
    whole). stamped: each line starts with docker's RFC 3339 stamp, its time, cut off when read
    (store/logs.py); every other line's time is when it was read (`time`, `times`). Log lines
    from before blocks are execution_event rows.
    """

    __tablename__ = "log_block"
    __table_args__ = (Index("ix_log_block_first", "execution_id", "first_seq", unique=True),
                      Index("ix_log_block_last", "execution_id", "last_seq", unique=True))

    id: int | None = Field(default=None, primary_key=True)
    execution_id: int = Field(foreign_key="execution.id")
    first_seq: int
    last_seq: int
    time: datetime
    # [[line index, time], ...]: where the lines of a later read start, with its time ("YYYY-MM-DD
    # HH:MM:SS.ffffff", UTC); None when every line without a stamp was read at `time`.
    times: list[list[Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    stream: str
    stamped: bool = False
    texts: str = Field(sa_column=Column(Text, nullable=False))


class MetadataPoint(SQLModel, table=True):
    __tablename__ = "metadata_point"
    __table_args__ = (Index("ix_metadata_point_seq", "execution_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    execution_id: int = Field(foreign_key="execution.id")
    seq: int
    time: datetime
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class UtilizationSample(SQLModel, table=True):
    """What an execution's machine did for it at one moment: its CPU (100 = one core), memory, and the
    use of each GPU given to it (`gpus`: [{index, utilization_percent, memory_used_bytes}, ...])."""

    __tablename__ = "utilization_sample"
    __table_args__ = (Index("ix_utilization_sample_execution", "execution_id", "time"),)

    id: int | None = Field(default=None, primary_key=True)
    execution_id: int = Field(foreign_key="execution.id")
    attempt: int = 0
    time: datetime
    cpu_percent: float | None = None
    memory_bytes: int | None = Field(default=None, sa_type=BigInteger)
    gpus: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Output(SQLModel, table=True):
    """A file an execution left in its outputs folder, stored in a datastore."""

    id: str = Field(primary_key=True)  # the datum id: datum://<id>
    execution_id: int = Field(foreign_key="execution.id", index=True)
    name: str
    size: int = Field(sa_type=BigInteger)  # models of several GB: more than a 32-bit integer on PostgreSQL
    sha256: str
    uri: str
    created_at: datetime = Field(default_factory=utcnow)
    # `valohai.tags` and the rest of its output metadata (`valohai.metadata.jsonl` or FILE.metadata.json)
    tags: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    properties: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class DaemonHeartbeat(SQLModel, table=True):
    __tablename__ = "daemon_heartbeat"

    id: int | None = Field(default=None, primary_key=True)
    pid: int
    hostname: str
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    stopped_at: datetime | None = None


class Lease(SQLModel, table=True):
    """Who does one unit of work now: an environment's reconcile (`env:ID`), one started execution
    (`exec:ID`), the installation-wide jobs (`cluster`). The owner is a replica (its heartbeat row);
    `token` goes up whenever the owner changes, and every write that depends on the work checks it
    (fencing): a replica that lost the lease while paused writes nothing when it wakes."""

    key: str = Field(primary_key=True)
    owner: int = Field(index=True)
    token: int = 1
    expires_at: datetime

