"""posix_spawn(3) of glibc, through ctypes: a spawn that costs the loop little.

Why: `subprocess.Popen` costs the parent about twice the CPU of a bare
posix_spawn (Python-level setup, an error pipe read until the exec), and in
Python 3.11 it holds the GIL while the vfork'ed child gets to its exec, so
on a busy machine the whole event loop stalls behind each spawn.  glibc's
posix_spawn uses clone(CLONE_VM | CLONE_VFORK) too, and a ctypes call
releases the GIL for its duration.  `os.posix_spawn` cannot be used: it
keeps the GIL, and cannot close the parent's inheritable descriptors nor
change directory.

What Popen guarantees is kept, action for action: stdin from /dev/null,
stdout/stderr onto the given fds, every other descriptor from 3 up closed
(`posix_spawn_file_actions_addclosefrom_np`, glibc 2.34+: Popen's
``close_fds=True``), the working directory changed
(`posix_spawn_file_actions_addchdir_np`), a new process group, SIGPIPE and
SIGXFSZ back to their default action (Popen's ``restore_signals``).  The
executable is looked up in the *child's* PATH the way Popen does (every
directory in turn, the first error other than "not found" reported), and
errors are the `OSError`s Popen raises, with the same errno and file name.

`load()` returns None where any of this is missing (macOS, musl, glibc
before 2.34): the caller then uses Popen.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import stat
import sys
from array import array
from collections.abc import Mapping, Sequence
from itertools import accumulate

__all__ = ["PosixSpawn", "Prepared", "load"]

_SETPGROUP = 0x02  # POSIX_SPAWN_SETPGROUP
_SETSIGDEF = 0x04  # POSIX_SPAWN_SETSIGDEF
# Opaque glibc types, allocated generously (glibc: 80, 336 and 128 bytes).
_ACTIONS_SIZE = 1024
_ATTR_SIZE = 1024
_SIGSET_SIZE = 256
# Errors of the spawn itself (no process could be made), reported without a
# file name as Popen reports its fork errors.
_PARENT_ERRORS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})

_c_int_p = ctypes.POINTER(ctypes.c_int)
_VOID = ctypes.c_void_p
_PTR = {4: "I", 8: "Q"}.get(ctypes.sizeof(ctypes.c_void_p), "Q")  # array typecode of a pointer


def _pointers(strings: Sequence[bytes]) -> tuple[object, array[int]]:
    """A NULL-terminated ``char *[]`` of `strings` (which hold no NUL): (memory, array).

    One buffer and one array of addresses instead of a ctypes object per
    string: an environment has dozens of entries and this is a hot path.
    """
    blob = ctypes.create_string_buffer(b"\0".join(strings), sum(map(len, strings)) + len(strings))
    starts = array(_PTR, accumulate([len(s) + 1 for s in strings], initial=ctypes.addressof(blob)))
    starts[-1] = 0  # the terminating NULL
    return blob, starts


class PosixSpawn:
    """The libc functions, and the spawn attributes every child shares (read-only)."""

    def __init__(self, libc: ctypes.CDLL, quick: ctypes.PyDLL) -> None:
        # Plain ints, bytes and buffers need no argtypes (and calls are faster
        # without); only posix_spawn takes raw addresses.  posix_spawn waits
        # for the child's exec: it releases the GIL (a CDLL call).  The others
        # only fill in memory: they keep the GIL (a PyDLL call), as releasing
        # and taking it back costs more than they do, and far more in a worker
        # thread while the event loop holds it.
        self._spawn = libc.posix_spawn
        self._spawn.argtypes = (_c_int_p, ctypes.c_char_p, _VOID, _VOID, _VOID, _VOID)
        self._init = quick.posix_spawn_file_actions_init
        self._destroy = quick.posix_spawn_file_actions_destroy
        self._open = quick.posix_spawn_file_actions_addopen
        self._dup2 = quick.posix_spawn_file_actions_adddup2
        self._closefrom = quick.posix_spawn_file_actions_addclosefrom_np
        self._chdir = quick.posix_spawn_file_actions_addchdir_np
        # Immutable once made: posix_spawn only reads it, from any thread.
        self._attr = ctypes.create_string_buffer(_ATTR_SIZE)
        sigdefault = ctypes.create_string_buffer(_SIGSET_SIZE)
        _check(libc.posix_spawnattr_init(self._attr))
        _check(libc.sigemptyset(sigdefault))
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            _check(libc.sigaddset(sigdefault, sig))
        _check(libc.posix_spawnattr_setsigdefault(self._attr, sigdefault))
        _check(libc.posix_spawnattr_setpgroup(self._attr, 0))
        _check(libc.posix_spawnattr_setflags(self._attr, ctypes.c_short(_SETPGROUP | _SETSIGDEF)))

    def prepare(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None,
        env: Mapping[bytes, bytes] | None,
        stdout: int | None,
        stderr: int | None,
    ) -> Prepared:
        """Everything a spawn of `argv` needs, in C memory; `Prepared.run` spawns.

        `stdout`/`stderr` are fds for the child's 1 and 2 (>= 3, or None for
        /dev/null).  Raises ValueError for a NUL byte.  The caller must
        `close()` what it gets, run or not.
        """
        args = [os.fsencode(arg) for arg in argv]
        if env is None:
            env = os.environb
        entries = [key + b"=" + value for key, value in env.items()]
        cwd_b = os.fsencode(cwd) if cwd is not None else None
        if b"\0" in b"".join([*args, *entries, cwd_b or b""]):
            raise ValueError("embedded null byte")
        prepared = Prepared(self, args[0], cwd_b)
        prepared.memory = (_pointers(args), _pointers(entries))
        actions = prepared.actions
        _check(self._init(actions))
        prepared.initialized = True
        _check(self._open(actions, 0, b"/dev/null", os.O_RDONLY, 0))
        for target, fd in ((1, stdout), (2, stderr)):
            if fd is None:
                _check(self._open(actions, target, b"/dev/null", os.O_WRONLY, 0))
            else:
                _check(self._dup2(actions, fd, target))
        _check(self._closefrom(actions, 3))
        if cwd_b is not None:
            _check(self._chdir(actions, cwd_b))
        prepared.candidates = _candidates(args[0], env, cwd_b)
        return prepared


class Prepared:
    """One spawn, ready to run: `run()` makes the child; `close()` frees the memory.

    `run` calls nothing that releases the GIL but posix_spawn itself, so that
    in a worker thread it has to win the GIL back from the event loop only
    once (every release costs a hand-over when the loop is busy).
    """

    __slots__ = ("actions", "candidates", "cwd", "initialized", "lib", "memory", "name")

    def __init__(self, lib: PosixSpawn, name: bytes, cwd: bytes | None) -> None:
        self.lib = lib
        self.name = name
        self.cwd = cwd
        self.actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
        self.initialized = False
        self.memory: tuple[tuple[object, array[int]], tuple[object, array[int]]] | None = None
        # The paths to try in turn (Popen's PATH search), each with the error
        # its stat gave (0: it exists, exec may work).
        self.candidates: list[tuple[bytes, int]] = []

    def run(self) -> int:
        """Spawn the first candidate that execs; return its pid."""
        assert self.memory is not None
        (_, argv_p), (_, env_p) = self.memory
        argv_a, env_a = argv_p.buffer_info()[0], env_p.buffer_info()[0]
        pid = ctypes.c_int()
        first_error = 0
        spawn, attr = self.lib._spawn, self.lib._attr
        for path, missing in self.candidates:
            if missing:
                if missing not in (errno.ENOENT, errno.ENOTDIR) and not first_error:
                    first_error = missing
                continue
            code = spawn(ctypes.byref(pid), path, self.actions, attr, argv_a, env_a)
            if code == 0:
                return pid.value
            if self.cwd is not None:
                _check_cwd(self.cwd)  # chdir failed: Popen names the directory
            if code in _PARENT_ERRORS:
                raise OSError(code, os.strerror(code))
            if code not in (errno.ENOENT, errno.ENOTDIR) and not first_error:
                first_error = code
        code = first_error or errno.ENOENT
        raise OSError(code, os.strerror(code), os.fsdecode(self.name))

    def close(self) -> None:
        """Free the file actions (the child, if any, has exec'd by now)."""
        if self.initialized:
            self.initialized = False
            self.lib._destroy(self.actions)
        self.memory = None


def _candidates(
    name: bytes, env: Mapping[bytes, bytes], cwd: bytes | None
) -> list[tuple[bytes, int]]:
    """The paths exec may try for `name`, each with its stat's errno (0: it exists).

    A name with a slash is tried as it is; a bare name in each directory of
    the *child's* PATH, as Popen does (get_exec_path takes bytes keys too).
    Stat'ing first skips what exec would not find, without making a process
    for it.
    """
    if os.path.dirname(name):
        return [(name, 0)]
    found = []
    for d in os.get_exec_path(env):  # type: ignore[arg-type]
        path = os.path.join(os.fsencode(d), name)
        try:
            os.stat(path if cwd is None else os.path.join(cwd, path))
        except OSError as exc:
            found.append((path, exc.errno or errno.ENOENT))
        else:
            found.append((path, 0))
    return found


def _check(code: int) -> None:
    if code:
        raise OSError(code, os.strerror(code))


def _check_cwd(cwd: bytes) -> None:
    """Raise what chdir(`cwd`) would have failed with, as Popen reports it."""
    try:
        mode = os.stat(cwd).st_mode
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fsdecode(cwd)) from None
    if not stat.S_ISDIR(mode):
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fsdecode(cwd))
    if not os.access(cwd, os.X_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(cwd))


def load() -> PosixSpawn | None:
    """The binding, or None where libc lacks what it needs (then Popen is used)."""
    if sys.platform != "linux" or array(_PTR).itemsize != ctypes.sizeof(ctypes.c_void_p):
        return None
    try:
        return PosixSpawn(ctypes.CDLL(None, use_errno=True), ctypes.PyDLL(None))
    except (OSError, AttributeError):
        return None
