"""A remote container's launch and output, through a relay on its host that never waits on vh-orch.

The launch is one host-side script, started detached (`setsid`) by one SSH command, so neither a
cut connection nor a daemon killed halfway can leave it half done: it creates the container,
attaches to it through the engine's API (`POST /containers/ID/attach` piped into `docker system
dial-stdio`) with the attach's output going to a FILE in the attempt's folder on the host, then
starts it, and says how that went (in LAUNCH_DIR). The attach's reader is dial-stdio writing a
file: it never stops reading, so the container never waits on vh-orch, however slow, paused or
gone the daemon is. When the attach ends (the container's streams closed: it exited, or was
removed), the relay says so (LAUNCH_DIR/relayed.CODE).

The file holds the engine's answer (`HTTP/1.1 101 ...`) and then Docker's multiplexed frames, which
keep the order and the stream of every piece of output. The daemon follows it with `tail -c +K -f`
over SSH, K being the bytes it has read so far, and demuxes the frames into the ingester's pipes;
a cut connection resumes at K. Once the relay has ended the file is complete and is read to its end.
If the relay could not write it all (a full disk), Docker's own log of the container fills the rest:
per stream, the bytes handed on from the file are skipped.

Exactly once across a daemon restart: a daemon that re-attaches reads the file from its start; the
ingester skips the stream's first N lines, N being the command's lines stored already
(store.command_lines): the lines are cut from the same bytes in the same way (logs.py), so the first
N are exactly those stored. Every line is handed on with the time this daemon read it, as a stamp of
docker's fixed width, so a stored line is known as the command's (vh-orch's own notes carry none).

A launch cut on the host (the launcher killed before it said how the start went) leaves at most a
container that was created and never started: the daemon removes it (`docker rm` without -f, which
refuses a running one) and the execution goes back to the queue, nothing having run.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import time
from datetime import UTC, datetime
from typing import IO

import paramiko

from vh_orch.bootstrap.runtimes import STATE_FORMAT, VANISHED, widen_pipe
from vh_orch.bootstrap.ssh import RemoteCommand, SSHError, SSHTransport
from vh_orch.bootstrap.usage import Probe

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.2, 0.5, 1, 2, 5)
ENGINE_WAIT_S = 600  # a host's engine that does not answer this long: its container's end is not known
LAUNCH_WAIT_S = 3600  # the launch may pull the image (docker create --pull)
REMOVAL_S = 0.5  # how long after a container was killed its removal is looked for
EXIT_NOTED_S = 5.0  # how long after its streams closed a container may still show as running
HEAD_BYTES = 64 << 10  # the engine's answer before the frames, at most
# A read smaller than GATHER_BYTES waits GATHER_S for more packets to arrive: a chatty log
# arrives in packets of a few hundred bytes, and one piece is handled faster than dozens.
GATHER_BYTES = 16 << 10
GATHER_S = 0.01
STREAMS = {1: "stdout", 2: "stderr"}  # Docker's frame kinds; 3 is the engine's own error
RUNNING = ("running", "restarting", "paused")

# In the attempt's folder on the host (never mounted into the container: only its subfolders are).
OUTPUT_FILE = ".vh-output"
LAUNCH_DIR = ".vh-launch"  # made by the first launch (mkdir: one launch per attempt), holds its word

# The launcher's state lives in the NAMES of empty files in LAUNCH_DIR, so that a full disk (the
# command's outputs share it) cannot lose it: creating an empty file takes no data block.
#   pid.PID         the launcher (later the relay: the same process, exec'd)
#   started.ID      the container was created, attached and started
#   failed.CODE     it was not (docker's complaint in `err`, when the disk took it)
#   relayed.CODE    the attach has ended (dial-stdio's exit status): the output file is complete,
#                   unless CODE is not 0 (then Docker's own log fills the rest)
# The launcher, run detached on the host: $1 the attempt's folder, $2 the names of the secret
# variables (for `docker create -e NAME` only), then `docker create ...`. The relay goes on in a
# shell without the secrets in its environment.
LAUNCHER = r"""F=$1; secrets=$2; shift 2; L=$F/.vh-launch
trap '' HUP PIPE
: > "$L/pid.$$"
C=$("$@" 2>"$L/err") || { : > "$L/failed.$?"; exit 0; }
for name in $secrets; do unset "$name"; done
exec sh -c "$RELAY" vh-relay "$F" "$(printf '%s' "$C" | tail -n 1)"
"""

# The relay, $1 the attempt's folder, $2 the created container's id: attach, start, wait.
RELAY = r"""F=$1; C=$2; L=$F/.vh-launch; O=$F/.vh-output
trap '' HUP PIPE
printf 'POST /containers/%s/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n' "$C" \
  | docker system dial-stdio > "$O" 2>>"$L/err" &
R=$!
i=0
until grep -q '^HTTP/1.1 101' "$O" 2>/dev/null && grep -q "$(printf '^\r$')" "$O" 2>/dev/null; do
  i=$((i + 1))
  if ! kill -0 $R 2>/dev/null || [ $i -gt 3000 ]; then
    kill $R 2>/dev/null; docker rm -f "$C" >/dev/null 2>&1
    { echo "attaching to the container failed:"; head -c 300 "$O"; } >> "$L/err"; : > "$L/failed.1"; exit 0
  fi
  sleep 0.01
done
docker start "$C" >/dev/null 2>>"$L/err" || { kill $R 2>/dev/null; docker rm -f "$C" >/dev/null 2>&1; : > "$L/failed.1"; exit 0; }
: > "$L/started.$C"
wait $R
: > "$L/relayed.$?"
"""

# Shell functions over LAUNCH_DIR's names: `word PREFIX` prints the rest of the first name
# PREFIX.*, or fails; `alive` whether the launcher (or its relay) still runs.
WORDS = r"""word() { for f in "$L/$1".*; do [ -e "$f" ] && { printf '%s\n' "${f##*/$1.}"; return 0; }; done; return 1; }
alive() { p=$(word pid) && kill -0 "$p" 2>/dev/null; }
"""

# The daemon's word with the launcher: $1 the attempt's folder, $2 the wait's bound in 0.02 s steps.
# Prints `started ID` (exit 0), or docker's complaint (stderr) with its exit status.
AWAIT_LAUNCH = r"""F=$1; L=$F/.vh-launch; n=$2; i=0
""" + WORDS + r"""while ! word started >/dev/null && ! word failed >/dev/null; do
  i=$((i + 1))
  if [ $i -gt "$n" ]; then echo "the launch on the host gave no word in time" >&2; exit 1; fi
  if [ $((i % 50)) = 0 ] && word pid >/dev/null && ! alive && ! word started >/dev/null && ! word failed >/dev/null; then
    echo "the launch on the host was cut" >&2; exit 1
  fi
  sleep 0.02
done
if C=$(word started); then echo "started $C"; exit 0; fi
code=$(word failed)
grep -v -e '^$' -e '--help' "$L/err" >&2 || echo "the launch failed (exit status $code; the host's disk may be full)" >&2
rm -rf "$L"
exit "$code"
"""

# Follow the relay's file from byte $2 on until the relay has ended (exit 0: then read the rest
# with READ_REST), or say why not: 10 the launch gave no word yet (11: and its launcher is gone),
# 12 the launch failed. `tail -f` ends with the loop, or by SIGPIPE when the daemon goes away.
FOLLOW = r"""F=$1; K=$2; L=$F/.vh-launch; O=$F/.vh-output
""" + WORDS + r"""if ! word started >/dev/null; then
  word failed >/dev/null && exit 12
  alive && exit 10
  word started >/dev/null || exit 11
fi
word relayed >/dev/null && exit 0
tail -c +"$K" -f "$O" & T=$!
# (GNU tail's own --pid would end it too, but it then reads the file by polling, far slower.)
while ! word relayed >/dev/null && kill -0 $T 2>/dev/null; do sleep 0.05; done
kill $T 2>/dev/null
exit 0
"""

# A launch whose launcher died before its word ($1 the folder, $2 the container): exit 0 once a
# container that was never started is removed, 3 if it is gone, 4 if it was started (then its
# relay is taken as ended, cut: Docker's log fills what the file lacks).
SETTLE_CUT = r"""F=$1; C=$2; L=$F/.vh-launch
st=$(docker inspect --format '{{.State.Status}}' "$C" 2>/dev/null) || exit 3
if [ "$st" = created ]; then docker rm "$C" >/dev/null && exit 0; exit 1; fi
: > "$L/started.$C"; : > "$L/relayed.cut"; exit 4
"""

# The rest of a relay's file from byte $2, once the relay has ended (exit 13 if it has not), its
# exit status first, alone on stderr.
READ_REST = r"""F=$1; K=$2; L=$F/.vh-launch
""" + WORDS + r"""word relayed >&2 || exit 13
[ -e "$F/.vh-output" ] || exit 0
tail -c +"$K" "$F/.vh-output"
"""


def script_command(script: str, *args: str) -> str:
    """A script and its arguments as one command line (`sh -c SCRIPT NAME ARGS`)."""
    return "sh -c " + " ".join(shlex.quote(a) for a in (script, "vh-orch", *args))


def launch_command(folder: str, create_args: list[str], before: str = "", secret_names: list[str] | None = None) -> str:
    """The shell that starts the launcher detached, once per attempt (its folder's LAUNCH_DIR is made
    once), after `before` (the name's holder cleared, the image's marker), then waits for its word.
    A second call (a retry after a cut connection) only waits for the first one's word."""
    q = shlex.quote
    # `before` may end the shell (a later attempt holds the name): then no launch was made.
    return (f"F={q(folder)}\n"
            f"if mkdir \"$F/{LAUNCH_DIR}\" 2>/dev/null; then\n"
            f"  trap 'rm -rf \"$F/{LAUNCH_DIR}\"' EXIT\n"
            f"  {before}\n"
            f"  trap - EXIT\n"
            f"  command -v setsid >/dev/null 2>&1 && S=setsid || S=nohup\n"
            f"  RELAY={q(RELAY)} $S sh -c {q(LAUNCHER)} vh-launch \"$F\" {q(' '.join(secret_names or []))} "
            f"{' '.join(q(a) for a in create_args)} "
            f"</dev/null >/dev/null 2>&1 &\n"
            f"fi\n"
            f"exec sh -c {q(AWAIT_LAUNCH)} vh-await \"$F\" {int(LAUNCH_WAIT_S / 0.02)}\n")


def stamp_now() -> bytes:
    """The read time in docker's fixed-width stamp and its space (see store/logs.py STAMP_WIDTH)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z ").encode()


class Stamper:
    """Puts a stamp before each line of a stream (bytes in any pieces; a line's start only once)."""

    def __init__(self) -> None:
        self.at_start = True

    def feed(self, data: bytes, stamp: bytes) -> bytes:
        if not data:
            return data
        out = data.replace(b"\n", b"\n" + stamp)
        if self.at_start:
            out = stamp + out
        self.at_start = data.endswith(b"\n")
        return out[:-len(stamp)] if self.at_start else out


class Demux:
    """The relay's file: the engine's answer, then Docker's multiplexed frames (8-byte headers: kind,
    0, 0, 0, size big-endian; then the bytes), fed in any pieces."""

    def __init__(self) -> None:
        self._buf = b""
        self.head = True  # the engine's answer is still to be passed
        self.errors: list[bytes] = []  # what the engine said in kind-3 frames

    @property
    def aligned(self) -> bool:
        """Whether the bytes so far ended at a frame's end."""
        return not self._buf and not self.head

    def feed(self, data: bytes) -> dict[int, bytes]:
        buf = self._buf + data if self._buf else data
        pos, n = 0, len(buf)
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if n > HEAD_BYTES:
                    raise ValueError("the relay's file does not start with the engine's answer")
                self._buf = buf
                return {}
            pos, self.head = end + 4, False
        parts: dict[int, list[bytes]] = {1: [], 2: []}
        while n - pos >= 8:
            end = pos + 8 + int.from_bytes(buf[pos + 4:pos + 8], "big")
            if end > n:
                break
            kind = buf[pos]
            if kind in parts:
                parts[kind].append(buf[pos + 8:end])
            elif kind == 3:
                self.errors.append(buf[pos + 8:end])
            pos = end
        self._buf = buf[pos:]
        return {kind: b"".join(p) for kind, p in parts.items() if p}


class RemoteContainer:
    """A container launched through the relay (see the module's docstring), its output pumped from
    the relay's file into local pipes, reconnecting as needed.

    stdout/stderr carry `<stamp> <text>` lines (the ingester reads them with timestamped=True).
    """

    timestamped = True

    def __init__(self, transport: SSHTransport, name: str, folder: str, probe_name: str = "") -> None:
        self.transport = transport
        self.name = name  # its id (or name): every command on it goes by this
        self.folder = folder  # the attempt's folder on the host: the relay's files
        self.probe_name = probe_name  # its name, which the hardware sampler reads it by
        self.offset = 0  # bytes of the relay's file read so far
        self.passed = {"stdout": 0, "stderr": 0}  # bytes of each stream handed on
        out_r, self._out_w = os.pipe()
        err_r, self._err_w = os.pipe()
        widen_pipe(out_r)
        widen_pipe(err_r)
        self.stdout: IO[bytes] = os.fdopen(out_r, "rb")
        self.stderr: IO[bytes] = os.fdopen(err_r, "rb")
        self._demux = Demux()
        self._stampers = {"stdout": Stamper(), "stderr": Stamper()}
        self._exit: int | None = None
        self.out_of_memory = False  # the engine's OOMKilled, read with the exit code
        self.output_ended = False  # the relay ended: its state and last bytes are being read
        self.never_started = False  # its launch was cut on the host before the start: nothing ran
        self.problem: str | None = None  # why its output may be incomplete
        self._released = False
        self._command: RemoteCommand | None = None
        self._sinks: dict[str, IO[bytes]] = {}
        self._engine_ok = time.monotonic()  # when the host's engine last answered
        self._done = threading.Event()
        self._pump = threading.Thread(target=self._follow, name=f"logs-{name}", daemon=True)
        self._pump.start()

    def poll(self) -> int | None:
        return self._exit if self._done.is_set() else None

    def probe(self) -> Probe:
        """What its hardware use is read from (usage.py, by its name), over `transport`."""
        return Probe("container", self.probe_name or self.name)

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.name} did not end in time")
        return self._exit if self._exit is not None else VANISHED

    def stop(self, grace_s: float) -> None:
        try:
            self.transport.run(f"docker stop -t {int(grace_s)} {self.name}", timeout=grace_s + 60)
        except SSHError as exc:
            log.warning("stopping %s failed: %s", self.name, exc)
        self._done.wait(grace_s + 60)

    def release(self) -> None:
        """Stop following (the container runs on; another daemon, or this one later, follows it from
        the relay's file)."""
        self._released = True
        command = self._command
        if command is not None:
            command.close()

    # -- the pump -----------------------------------------------------------------

    def _follow(self) -> None:
        out = os.fdopen(self._out_w, "wb")
        err = os.fdopen(self._err_w, "wb")
        self._sinks = {"stdout": out, "stderr": err}
        failures = 0
        try:
            while not self._released:
                try:
                    if self._follow_once():
                        self.output_ended = True
                        self._settle()
                        return
                except (SSHError, OSError, EOFError, paramiko.SSHException) as exc:
                    if self._released:
                        return
                    failures += 1
                    delay = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S)) - 1]
                    log.info("%s: following output broke (%s); resuming in %s s", self.name, exc, delay)
                    time.sleep(delay)
                else:
                    failures = 0
        finally:
            out.close()
            err.close()
            self._done.set()

    def _follow_once(self) -> bool:
        """Follow the relay's file from `offset`; True once it was read to its end (the relay ended).
        SSHError when the connection broke or the launch is not settled yet."""
        rest = self._copy(READ_REST)
        if rest == 0:
            if self.problem is not None:
                self._fill_from_log()
            return True
        if rest != 13:
            raise SSHError(f"reading the relay's file failed (exit status {rest})")
        code = self._copy(FOLLOW)
        if code == 10:
            time.sleep(0.2)  # the launch is under way (creating the container, pulling its image)
            return False
        if code == 11:
            self._launch_cut()
            return self.never_started  # else started after all: its file is read, the log fills the rest
        if code == 12:
            self.never_started = True  # its launch failed: nothing ran (the launch said why)
            return True
        if code != 0:
            raise SSHError(f"following the relay's file broke (exit status {code})")
        return False  # the relay has ended: the next look reads the rest

    def _copy(self, script: str) -> int:
        """Run a script on the relay's file from `offset` and hand on the frames in what it prints;
        its exit status (-1: the connection broke)."""
        command = self.transport.start(script_command(script, self.folder, str(self.offset + 1)))
        self._command = command
        channel = command.channel
        stamper = self._stampers
        sinks = self._sinks
        try:
            while True:
                try:
                    data = channel.recv(1 << 18)
                except (OSError, EOFError):
                    data = b""
                if not data:
                    break
                if len(data) < GATHER_BYTES:
                    time.sleep(GATHER_S)
                    if channel.recv_ready():
                        data += channel.recv(1 << 18)
                self.offset += len(data)
                parts = self._demux.feed(data)
                if parts:
                    stamp = stamp_now()
                    for kind, payload in parts.items():
                        name = STREAMS[kind]
                        sink = sinks[name]
                        sink.write(stamper[name].feed(payload, stamp))
                        sink.flush()
                        self.passed[name] += len(payload)
            code = command.wait(60)
            if script is READ_REST and code == 0:
                relayed = command.stderr.read().decode(errors="replace").strip()
                if relayed != "0":
                    self.problem = ("its output relay on the host ended with status "
                                    f"{relayed or 'unknown'}: lines may be missing")
                if self._demux.errors:
                    log.warning("%s: the engine said: %s", self.name,
                                self._demux.errors[-1][:300].decode(errors="replace"))
            return code
        except TimeoutError:
            return -1
        finally:
            self._command = None
            command.close()

    def _fill_from_log(self) -> None:
        """The relay could not write all of the output (a full disk): hand on the rest from Docker's
        own log, per stream skipping the bytes handed on already (the log holds the same bytes).
        A followed log may stop short of its last lines, so the last read is of an exited
        container's log. SSHError while that cannot be read; the problem stays if it is gone."""
        while True:
            state = self._state()
            if state is None:
                return  # gone with its log: what is missing stays missing (self.problem says so)
            running = state[0] in RUNNING or state[0] == "created"
            command = self.transport.start(f"docker logs {'-f ' if running else ''}{self.name}")
            self._command = command
            skip = dict(self.passed)
            try:
                readers = [threading.Thread(target=self._copy_log, args=(recv, name, skip), daemon=True)
                           for recv, name in ((command.channel.recv, "stdout"), (command.channel.recv_stderr, "stderr"))]
                for reader in readers:
                    reader.start()
                for reader in readers:
                    reader.join()
                code = command.wait(60)
            except TimeoutError:
                code = -1
            finally:
                self._command = None
                command.close()
            if code != 0:
                raise SSHError(f"reading docker's log of the container failed (exit status {code})")
            if not running:
                self.problem = None
                return

    def _copy_log(self, recv, name: str, skip: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
        sink, stamper = self._sinks[name], self._stampers[name]
        while True:
            try:
                data = recv(1 << 18)
            except (OSError, EOFError):
                data = b""
            if not data:
                return
            if skip[name]:
                dropped = min(skip[name], len(data))
                skip[name] -= dropped
                data = data[dropped:]
                if not data:
                    continue
            sink.write(stamper.feed(data, stamp_now()))
            sink.flush()
            self.passed[name] += len(data)

    def _settle(self) -> None:
        """The relay ended (or the launch did not start it): read how the container ended."""
        if self.never_started:
            return
        state = self._state()
        deadline = time.monotonic() + EXIT_NOTED_S
        while state is not None and state[0] in RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)  # the engine notes the exit a moment after the streams close
            state = self._state()
        if state is not None and (state[0] in RUNNING or state[0] == "created"):
            # The attach ended while the container runs (its engine restarted, keeping containers
            # alive?): Docker's own log has the rest, until its end.
            self.problem = "its output relay on the host ended before the container did"
            self._fill_from_log()
            state = self._state()
        if state is None:
            self._exit = VANISHED  # the container vanished under us
            return
        status, code, oom = state
        if int(code) > 128 and not self._still_there():
            self._exit = VANISHED  # killed to be removed (`docker rm -f` behind vh-orch's back)
            return
        self.out_of_memory = oom == "true"
        self._exit = int(code)

    def _launch_cut(self) -> None:
        """Its launcher died before it said how the start went. A container it created and never
        started is removed, and nothing ran. One it did start is followed on: what its relay wrote
        is read, and Docker's own log fills the rest (the relay's end is not known)."""
        result = self.transport.run(script_command(SETTLE_CUT, self.folder, self.name), timeout=60)
        if result.code == 0:
            self.never_started = True
            log.info("%s: its launch was cut on the host before the start; removed", self.name)
        elif result.code == 4:
            log.info("%s: its launch was cut on the host after the start; following it on", self.name)
        elif result.code == 3:
            self.never_started = True  # gone: nothing of it is left to follow
        else:
            raise SSHError(f"settling a cut launch failed: {result.stderr.strip()[:200]}")

    def _state(self) -> tuple[str, str, str] | None:
        """(status, exit code, OOMKilled); None when the container is gone; SSHError while the engine
        does not answer (and None once it has not for ENGINE_WAIT_S)."""
        result = self.transport.run(f"docker inspect --format '{STATE_FORMAT}' {self.name}", timeout=60)
        parts = result.stdout.split()
        if result.code != 0 and "No such" not in result.stderr:
            if time.monotonic() - self._engine_ok > ENGINE_WAIT_S:
                return None
            raise SSHError(f"docker does not answer: {result.stderr.strip()[:200]}")
        self._engine_ok = time.monotonic()
        if result.code != 0 or len(parts) != 3:
            return None
        return parts[0], parts[1], parts[2]

    def _still_there(self) -> bool:
        """Whether a container a signal ended is still there a moment later: `docker rm -f` kills
        first and removes next, and what was removed behind vh-orch's back has no known end."""
        time.sleep(REMOVAL_S)
        return self._state() is not None

