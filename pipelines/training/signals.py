"""SIGTERM and Ctrl-C in ``fit``/``validate``/``test``: handlers that only note the signal; the loops act on it.

A signal can arrive at any instruction: inside a tensor operation, a checkpoint write, a DataLoader fetch, a
print, a collective operation of a DDP step. A handler that does real work at that moment can leave the process
inconsistent: Lightning's own SIGTERM handler logs a line and, under DDP, runs a ``broadcast`` of its own, out of
step with the other ranks' collectives (with a peer that has already finished, the run then ends in a gloo
error and a traceback, and nothing is saved).

The handlers installed here (:func:`noting`) do nothing but record which signal came (:func:`received`): nothing
is printed, written, computed or sent inside them. The training and validation loops read that record between
steps and validation batches through the trainer's signal connector (:func:`signal_connector`; Lightning calls
it ``trainer.received_sigterm``), raise Lightning's ``SIGTERMException`` there, and
:class:`~pipelines.training.callbacks.SaveOnPreemption` saves ``last.ckpt`` and prints the one line with the
resume command (Lightning's "Received SIGTERM" line is not printed). Under DDP the ranks agree on the record at
the start of every training batch (:func:`agree`), so they stop at the same step; a validation under DDP runs to
its end first. A signal noted once the last epoch has been trained lets the run finish (summary, averaging).

The first Ctrl-C is treated as SIGTERM (save, resume line, exit 130); a second one interrupts at once.

Processes forked from this one do not run these handlers: they ignore SIGINT (Ctrl-C reaches a terminal's whole
process group; the main process decides) and get the default SIGTERM back. DataLoader workers ignore SIGTERM too,
from the moment they are forked (:func:`_in_forked_child`): a scheduler such as SLURM signals every process of a
job, and a worker killed by it ended the run with "DataLoader worker ... is killed by signal: Terminated" before
anything was saved. The main process ends its workers itself (and kills any left at exit, :func:`_reap_workers`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading

# This process's record: the first signal noted ("SIGTERM" or "Ctrl-C"), the process that installed the handlers,
# whether a noted signal is held back for now, and (DDP) what the ranks agreed on at the last training batch.
_state: dict = {"by": None, "pid": None, "holding": False, "agreed": False}
_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}
_once: dict = {"hooks": False}
# Set by the ``rnnlab`` console script: the handlers stay until the process exits, so a signal that arrives while
# it shuts down (the W&B writer finishing, say) is noted and named instead of killing it.
_until_exit: dict = {"on": False, "done": None}


def _note(signum: int, frame) -> None:
    """The handler: records the signal. Nothing else (see the module docstring)."""
    if os.getpid() != _state["pid"]:  # a forked process that kept the handler: its parent decides
        return
    if _state["by"] is None:
        _state["by"] = _NAMES.get(signum, "SIGTERM")
    if signum == signal.SIGINT:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once


def _in_forked_child() -> None:
    """After a fork, in the child: Ctrl-C ignored; SIGTERM back to its default action, or ignored and blocked in a
    DataLoader worker (PyTorch's worker then installs a SIGTERM handler of its own, which dies of any SIGTERM its
    main process did not send: blocked, the signal never reaches it)."""
    if _state["pid"] is None or os.getpid() == _state["pid"] or signal.getsignal(signal.SIGTERM) is not _note:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _forked_by_dataloader():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _forked_by_dataloader() -> bool:
    """Whether this fork starts a DataLoader worker: the child's stack is the forking thread's, which is inside
    ``torch/utils/data/dataloader.py`` then."""
    import sys

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.replace(os.sep, "/").endswith("torch/utils/data/dataloader.py"):
            return True
        frame = frame.f_back
    return False


def _reap_workers() -> None:
    """At exit: kills the DataLoader workers still alive (they block SIGTERM, which multiprocessing's own clean-up at
    exit sends them before it waits for them, forever)."""
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon and _blocks_sigterm(child.pid):
            with contextlib.suppress(Exception):
                child.kill()
                child.join(5)


def _blocks_sigterm(pid: int | None) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            blocked = next(line for line in f if line.startswith("SigBlk:")).split()[1]
    except (OSError, StopIteration, IndexError):
        return False
    return bool(int(blocked, 16) & (1 << (signal.SIGTERM - 1)))


@contextlib.contextmanager
def noting():
    """Within this block SIGTERM and SIGINT are only noted (:func:`received`); the handlers before it are restored
    after. Nested blocks share the outer one's record. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGTERM) is _note and _state["pid"] == os.getpid()):
        yield
        return
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    _state.update(by=None, pid=os.getpid(), holding=False, agreed=False)
    if not _once["hooks"]:
        import multiprocessing.util  # noqa: F401 - registers its exit function first: atexit runs ours before it

        os.register_at_fork(after_in_child=_in_forked_child)
        atexit.register(_reap_workers)
        _once["hooks"] = True
    signal.signal(signal.SIGTERM, _note)
    signal.signal(signal.SIGINT, _note)
    try:
        yield
    finally:
        if _until_exit["on"]:
            _until_exit["done"] = _state["by"] or ""
            signal.signal(signal.SIGINT, _note)  # a Ctrl-C while shutting down is noted too
        else:
            for s, handler in before.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
            _state.update(by=None, pid=None, holding=False, agreed=False)


def keep_until_exit() -> None:
    """Makes :func:`noting` leave its handlers in place until the process exits (the ``rnnlab`` console script):
    a signal that comes after the command has finished, while the process shuts down, is noted and named on stderr
    at exit instead of killing it."""
    if not _until_exit["on"]:
        _until_exit["on"] = True
        atexit.register(_name_late_signal)


def _name_late_signal() -> None:
    """The last exit function: names a signal noted after the command had finished, and ignores SIGTERM from
    here on (Python then puts back the default action of the handlers it installed, while it finalises its
    modules, which can take seconds: a SIGTERM would turn a finished command's exit status into 143)."""
    if _state["pid"] == os.getpid() and signal.getsignal(signal.SIGTERM) is _note:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _until_exit["done"] == "" and _state["by"] is not None:  # the command had finished without a signal
        import sys

        print(f"[rnnlab] {_state['by']} arrived after the command had finished; nothing was lost", file=sys.stderr,
              flush=True)


def received() -> str | None:
    """``"SIGTERM"``, ``"Ctrl-C"`` or None: the first signal noted in this process (see :func:`noting`)."""
    return _state["by"]


@contextlib.contextmanager
def hold():
    """Within this block the loops do not see a noted signal: bounded work that must finish (averaging the best
    checkpoints and validating the average, once training is over). The signal stays noted for afterwards."""
    before, _state["holding"] = _state["holding"], True
    try:
        yield
    finally:
        _state["holding"] = before


def agree(trainer) -> None:
    """Under DDP, at the start of a training batch on every rank: whether any rank noted a signal (all-reduce)."""
    import torch
    import torch.distributed as dist

    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        flag = torch.tensor([1 if _state["by"] is not None else 0], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        _state["agreed"] = bool(flag.item())


def release_child_observer() -> None:
    """Rank 0 of a DDP run that Lightning started (its other ranks are child processes), stopping on a signal:
    every rank stops and exits 143 at once, and Lightning's child-process observer would kill rank 0 with SIGKILL
    on seeing a child's non-zero exit while rank 0 still shuts down. It watches no child from here on."""
    for thread in threading.enumerate():
        if thread.name == "child-process-observer" and hasattr(thread, "_child_processes"):
            thread._child_processes = []


def _training_over(trainer) -> bool:
    """Whether a fit has trained its last epoch or step, or was told to stop (early stopping, ``max_time``)."""
    loop = trainer.fit_loop
    epochs = loop.max_epochs is not None and 0 <= loop.max_epochs <= loop.epoch_progress.current.processed
    steps = loop.max_steps is not None and 0 < loop.max_steps <= trainer.global_step
    return epochs or steps or bool(trainer.should_stop)


def stop_requested(trainer) -> bool:
    """What the loops read as ``trainer.received_sigterm``: a noted signal, agreed on by every rank under DDP, and
    not once the last epoch is trained (that run finishes) or while held (:func:`hold`)."""
    if _state["holding"]:
        return False
    if not (_state["agreed"] if trainer.world_size > 1 else _state["by"] is not None):
        return False
    return not (trainer.state.fn == "fit" and _training_over(trainer))


def signal_connector(trainer):
    """A signal connector for ``trainer`` (it replaces Lightning's ``trainer._signal_connector``) that installs no
    SIGTERM handler and reads :func:`stop_requested`; SLURM's requeue signal is still Lightning's."""
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.trainer.connectors.signal_connector import _HandlersCompose, _SignalConnector

    class NotedSignalConnector(_SignalConnector):
        @property
        def received_sigterm(self) -> bool:
            return stop_requested(self.trainer)

        @received_sigterm.setter
        def received_sigterm(self, value: bool) -> None:  # Lightning resets it for every run; the record stays
            pass

        def register_signal_handlers(self) -> None:
            self._original_handlers = self._get_current_signal_handlers()
            environment = self.trainer._accelerator_connector.cluster_environment
            if isinstance(environment, SLURMEnvironment) and environment.auto_requeue and os.name != "nt":
                requeue = environment.requeue_signal
                if requeue is not None and not self._has_already_handler(requeue):
                    self._register_signal(requeue, _HandlersCompose([self._slurm_sigusr_handler_fn]))

    return NotedSignalConnector(trainer)
