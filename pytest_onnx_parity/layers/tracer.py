"""The torch side: which modules are compared, against which ONNX value, and their outputs.

:class:`Tracer` puts a forward hook on every module. The first forward decides, module
by module as each returns, what is compared (the *plan*) and copies the outputs of the
first chunk; each later forward copies the outputs of one more chunk.

Compared: every module (but the root) that is called once in the forward, returns
one floating-point tensor, and whose scope yields a value of the same shape. What
exporters do to the graph is handled and said, never silently skipped:

* **Conv fused with its BatchNorm.** The dynamo exporter's optimizer folds the
  norm into the conv; the fused node carries the norm's scope and the conv's own
  output is gone: the norm is compared, the conv is listed as uncompared,
  ``fused into layer1.0.bn1``. The TorchScript exporter folds the other way (the
  node carries the conv's scope, the norm has no node): the norm's torch output is
  compared against that value and the conv is listed the same way. Either way the
  row is the norm's, with the conv in :attr:`LayerResult.fused`.
* **Aliases.** A module whose output is another module's output (a ``Sequential``
  and its last child, a block and its final activation) maps to the same ONNX
  value; it is compared once, under the innermost module, the others are in
  :attr:`LayerResult.aliases`.
* **Identity modules** (``nn.Identity``, dropout and drop-path in eval) return their
  input and have no ONNX node: listed as uncompared, "identity in eval".
* **In-place ops** (``ReLU(inplace=True)``, ``x += shortcut``) are harmless: torch
  outputs are copied as soon as each module returns.
* **Constant folding.** A module with no node and no fusion partner (its output
  was folded into a constant, or the exporter dropped its scope) is listed as
  uncompared with that reason.

Not compared (each listed with its reason): modules called more than once in one
forward (shared modules), modules that return a tuple, a dict or an integer tensor,
modules never called, modules whose ONNX value has another shape than the torch
output, and every module of a file that carries neither kind of scope.

The tracer also records the torch dataflow between modules (:attr:`Tracer.sources`),
from which :mod:`.verdict` tells the error each layer received.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .results import Uncompared

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .scopes import GraphScopes

__all__ = ["Entry", "Tracer"]


@dataclass
class Entry:
    """A module in the plan: the ONNX value it is compared against, and its chunk."""

    name: str
    module_type: str
    value: str
    ops: tuple[str, ...]
    nbytes: int
    chunk: int
    aliases: list[str] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)


class Tracer:
    """Forward hooks on every module: the mapping decisions (first forward) and the captures.

    ``side_budget`` bounds the bytes of torch outputs copied per chunk. After the first
    :meth:`forward`: :attr:`plan` (module -> :class:`Entry`), :attr:`order` (modules in
    the order they return), :attr:`uncompared`, :attr:`n_chunks`, and :attr:`sources`
    (module -> the modules that made its inputs, and whether an input came from
    elsewhere). Call :meth:`close` to remove the hooks.
    """

    def __init__(self, model: Any, modules: dict[str, Any], graph: "GraphScopes", side_budget: int):
        self.model = model
        self.modules = modules
        self.graph = graph
        self.side_budget = side_budget
        self.plan: dict[str, Entry] = {}
        self.order: list[str] = []
        self.sources: dict[str, tuple[list[str], bool]] = {}
        self._x: Any = None
        self.uncompared: dict[str, Uncompared] = {}
        self.n_chunks = 1
        self.extra: dict[int, set[str]] = {}
        """Chunk -> modules of earlier chunks whose outputs it also copies (the boundaries its modules read)."""
        self._calls: dict[str, int] = {}
        self._pending_fusable: set[str] = set()
        self._fused_into: dict[str, list[str]] = {}
        self._claimed: dict[str, str] = {}
        self._producer: dict[int, tuple[Any, str, int]] = {}
        self._chunk_bytes = 0
        self._chunk = 0
        self._pass = 0
        self._captured: dict[str, Any] = {}
        self._handles = [
            module.register_forward_hook(self._make_hook(name)) for name, module in modules.items() if name
        ]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._producer.clear()

    def forward(self, x: Any, chunk: int) -> dict[str, "np.ndarray"]:
        """One forward; returns the copied outputs of ``chunk``'s modules (the plan is made at chunk 0)."""
        import torch

        self._pass = chunk
        self._x = x
        self._captured = {}
        with torch.no_grad():
            self.model(x)
        if chunk == 0:
            self._finish_plan()
        return self._captured

    # -- hooks

    def _make_hook(self, name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            if self._pass == 0:
                self._plan_call(name, module, args, output)
            elif name in self.plan and self._calls.get(name) == 1 and (
                self.plan[name].chunk == self._pass or name in self.extra.get(self._pass, ())
            ):
                self._captured[name] = _copy_out(output)

        return hook

    # -- the plan, one module call at a time

    def _plan_call(self, name: str, module: Any, args: Any, output: Any) -> None:
        """Decide, as ``name`` returns in the first forward, whether and how it is compared."""
        import torch

        calls = self._calls[name] = self._calls.get(name, 0) + 1
        if calls > 1:
            return  # a shared module: resolved in _finish_plan
        self.order.append(name)
        inputs = [a for a in args if isinstance(a, torch.Tensor)] if isinstance(args, tuple) else []
        producers = self._record_dataflow(name, inputs, output)
        mtype = type(module).__name__
        reason = self._not_comparable(output)
        if reason is not None:
            self.uncompared[name] = Uncompared(name, mtype, reason)
            return
        has_nodes = name in self.graph.nodes_of
        if has_nodes:
            self._take_fused_producers(name, producers)
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and self.graph.own_nodes.get(name, 0) == 0:
            self._plan_folded_norm(name, mtype, inputs, producers, output, has_nodes)
        elif has_nodes:
            self._plan_value(name, mtype, output)
        else:
            self._plan_without_nodes(name, module, inputs, output)

    def _record_dataflow(self, name: str, inputs: list[Any], output: Any) -> list[str]:
        """Note which modules made ``name``'s inputs (in :attr:`sources`) and that it made ``output``."""
        import torch

        producers = [p for p in (self._producer_of(t) for t in inputs) if p is not None]
        unknown = any(self._producer_of(t) is None and t is not self._x for t in inputs) or not inputs
        self.sources[name] = (producers, unknown)
        if isinstance(output, torch.Tensor):
            self._record_producer(output, name)
        return producers

    def _not_comparable(self, output: Any) -> str | None:
        """Why no module returning ``output`` can be compared, or ``None``."""
        import torch

        if self.graph.exporter == "unknown":
            return "the ONNX file carries no scope information"
        if not isinstance(output, torch.Tensor):
            return f"returns {type(output).__name__}, not one tensor"
        if not output.is_floating_point():
            return f"returns a {output.dtype} tensor, not floating point"
        return None

    def _take_fused_producers(self, name: str, producers: list[str]) -> None:
        """Dynamo: a conv without nodes of its own was fused into the norm after it (``name``)."""
        for p in producers:
            if p in self._pending_fusable:
                self._pending_fusable.discard(p)
                self._fused_into[name] = [*self._fused_into.get(name, []), p]
                self.uncompared[p] = Uncompared(
                    p, type(self.modules[p]).__name__, f"fused with {name} by the exporter (compared as {name})"
                )

    def _plan_folded_norm(
        self, name: str, mtype: str, inputs: list[Any], producers: list[str], output: Any, has_nodes: bool
    ) -> None:
        """TorchScript: a batch norm folded into the conv before it; that conv's value is the norm's output."""
        partner = producers[0] if len(producers) == 1 and len(inputs) == 1 else None
        if partner is None or partner not in self.plan:
            if has_nodes:
                self._plan_value(name, mtype, output)
            else:
                self.uncompared[name] = Uncompared(
                    name, mtype, "batch norm folded by the exporter into an op that is not a compared module"
                )
            return
        entry = self.plan.pop(partner)
        self._drop_capture(partner)
        if has_nodes:
            self.uncompared[partner] = Uncompared(
                partner,
                entry.module_type,
                f"the exporter folded {name}'s batch norm into its ONNX op (compared as part of {name})",
            )
            self._plan_value(name, mtype, output, folded=[partner])
            return
        # the norm alone: compare it against the conv's value
        self._claimed[entry.value] = name
        self.uncompared[partner] = Uncompared(
            partner, entry.module_type, f"fused with {name} by the exporter (compared as {name})"
        )
        new = Entry(name, mtype, entry.value, entry.ops, _nbytes(output), -1, list(entry.aliases))
        new.fused.append(partner)
        self._admit(new, output)

    def _plan_without_nodes(self, name: str, module: Any, inputs: list[Any], output: Any) -> None:
        """A module no ONNX node carries: an identity, a fusion partner to come, or folded away."""
        mtype = type(module).__name__
        if any(output is t for t in inputs):
            self.uncompared[name] = Uncompared(name, mtype, "identity in eval mode (returns its input; no ONNX op)")
            return
        has_state = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        )
        if has_state:
            self._pending_fusable.add(name)
        self.uncompared[name] = Uncompared(
            name, mtype, "no ONNX node carries its scope (constant-folded, or the exporter dropped its name)"
        )

    def _plan_value(self, name: str, mtype: str, output: Any, folded: list[str] | None = None) -> None:
        """Compare ``name`` against the value its scope yields, unless another module claimed it first."""
        graph = self.graph
        fused = self._fused_into.pop(name, []) + (folded or [])
        value = graph.value_of.get(name)
        if value is None:
            self.uncompared[name] = Uncompared(name, mtype, graph.no_value_reason.get(name, "no ONNX value"))
            return
        owner = self._claimed.get(value)
        if owner is not None:
            if owner in self.plan:
                self.plan[owner].aliases.append(name)
                self.plan[owner].fused.extend(fused)
            else:
                self.uncompared[name] = Uncompared(name, mtype, f"same ONNX value as {owner}, which is not compared")
            return
        static = graph.shapes.get(value)
        if static is not None and not _shape_fits(static, tuple(output.shape)):
            self.uncompared[name] = Uncompared(
                name,
                mtype,
                f"shape mismatch: torch {tuple(output.shape)}, ONNX value {value!r} "
                f"{tuple('?' if d is None else d for d in static)}",
            )
            return
        self._claimed[value] = name
        entry = Entry(name, mtype, value, graph.ops_of.get(name, ()), _nbytes(output), -1, fused=fused)
        self._admit(entry, output)

    def _admit(self, entry: Entry, output: Any) -> None:
        """Put a module in the plan; copy its output now when the first chunk has room."""
        self.plan[entry.name] = entry
        self.uncompared.pop(entry.name, None)
        if self._chunk == 0 and (not self._captured or self._chunk_bytes + entry.nbytes <= self.side_budget):
            entry.chunk = 0
            self._captured[entry.name] = _copy_out(output)
            self._chunk_bytes += entry.nbytes
        else:
            self._chunk = 1  # the first chunk is full: everything after it waits

    def _drop_capture(self, name: str) -> None:
        array = self._captured.pop(name, None)
        if array is not None:
            self._chunk_bytes -= array.nbytes

    def _finish_plan(self) -> None:
        """After the first forward: drop shared modules, list those never called, cut the chunks."""
        for name, calls in self._calls.items():
            if calls > 1:
                self.plan.pop(name, None)
                self._drop_capture(name)
                self.uncompared[name] = Uncompared(
                    name,
                    type(self.modules[name]).__name__,
                    f"called {calls} times in one forward (a shared module); its calls cannot be told apart",
                )
        for name, module in self.modules.items():
            if name and name not in self._calls:
                self.uncompared[name] = Uncompared(name, type(module).__name__, "not called in the forward")
        self.cut_chunks({})
        self._producer.clear()

    def cut_chunks(self, feeders: dict[str, tuple[str, ...]]) -> None:
        """The chunks after the first: greedy, in execution order. A chunk copies its modules' outputs and
        those of the earlier modules they read (``feeders``: module -> those modules; :attr:`extra`), and ONNX
        Runtime yields its modules' values once: ``2 * modules + feeders`` stays within twice
        :attr:`side_budget` (the whole budget). The first chunk holds every module it reads (they return
        before it)."""
        self.extra = {}
        chunk, used, held = 0, 0, set()
        for name in self.order:
            entry = self.plan.get(name)
            if entry is None or entry.chunk == 0:
                continue
            needed = [f for f in feeders.get(name, ()) if f in self.plan]
            cost = 2 * entry.nbytes + sum(self.plan[f].nbytes for f in needed if f not in held)
            if chunk == 0 or (used and used + cost > 2 * self.side_budget):
                chunk, used, held = chunk + 1, 0, set()
                cost = 2 * entry.nbytes + sum(self.plan[f].nbytes for f in needed)
            entry.chunk = chunk
            used += cost
            held.add(name)
            for f in needed:
                if f not in held:
                    held.add(f)
                    self.extra.setdefault(chunk, set()).add(f)
        self.n_chunks = chunk + 1

    # -- dataflow between modules

    def _producer_of(self, tensor: Any) -> str | None:
        """The innermost module whose output this very tensor is, unless changed in place since."""
        found = self._producer.get(id(tensor))
        if found is None or found[0]() is not tensor or found[2] != tensor._version:
            return None  # another tensor, or modified in place by a functional op (``x += shortcut``)
        return found[1]

    def _record_producer(self, tensor: Any, name: str) -> None:
        previous = self._producer_of(tensor)
        if previous is not None and previous.startswith(name + "."):
            return  # a container returning its child's output: keep the innermost producer
        self._producer[id(tensor)] = (weakref.ref(tensor), name, tensor._version)


def _copy_out(tensor: Any) -> "np.ndarray":
    """A float32, contiguous, CPU copy (the module's output may be changed in place later)."""
    import numpy as np
    import torch

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.dtype != torch.float32:
        t = t.float()
    # numpy's copy: one plain memcpy, where torch's clone may wait on its thread pool
    return np.array(t.numpy(), dtype=np.float32, order="C", copy=True)


def _nbytes(tensor: Any) -> int:
    """Bytes of the float32 copy of ``tensor``."""
    return int(tensor.numel()) * 4


def _shape_fits(static: tuple[Any, ...], actual: tuple[int, ...]) -> bool:
    """Whether a static ONNX shape (``None`` or 0: unknown) admits ``actual``."""
    if len(static) != len(actual):
        return False
    return all(s is None or s == 0 or s == a for s, a in zip(static, actual))
