"""The account `expand()` gives of every tensor of a descendant: from the learngene, or new and why.

The same account is given by `select_teacher_layers` (tensors copied from a teacher) and by a learngene's
`init_from_teacher` (its tensors copied or fitted from a teacher); `origin` names where inherited tensors come from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorSource:
    name: str  # parameter name in the descendant
    shape: tuple[int, ...]
    # "learngene" (copied), "generated" (method rule), "teacher" (copied from a teacher), "fit" (computed from a
    # teacher's layers, e.g. a least-squares fit), "new" (initialized), "config" (buffer)
    source: str
    detail: str  # e.g. "theta_A + 3/6 * theta_B", "new head: 10 -> 5 labels"
    inherited: int | None = None  # elements from the learngene when only part of the tensor is (GTL masks)


@dataclass
class ExpansionReport:
    method: str
    num_layers: int
    model_class: str
    rows: list[TensorSource] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # learngene tensors the descendant has no place for
    origin: str = "learngene"  # what inherited tensors come from ("learngene", or "teacher")

    def add(self, name, shape, source, detail, inherited=None):
        self.rows.append(TensorSource(name, tuple(shape), source, detail, inherited))

    def count(self, source: str) -> int:
        return sum(1 for r in self.rows if r.source == source)

    def num_parameters(self, source: str) -> int:
        total = 0
        for r in self.rows:
            if r.source == source:
                n = 1
                for d in r.shape:
                    n *= d
                total += n if r.inherited is None else r.inherited
        return total

    @property
    def new(self) -> list[TensorSource]:
        return [r for r in self.rows if r.source == "new"]

    def summary(self) -> str:
        kinds = sorted({r.source for r in self.rows} - {"new", "config"})
        inherited = sum(self.count(kind) for kind in kinds)
        params = sum(self.num_parameters(kind) for kind in kinds)
        text = (
            f"{self.method} -> {self.model_class} with {self.num_layers} layers: {inherited} tensors "
            f"({params:,} parameters) from the {self.origin}"
        )
        if self.new:
            reasons = Counter(r.detail for r in self.new)
            text += ", " + "; ".join(f"{n} new ({why})" for why, n in reasons.items())
        if self.unused:
            text += f", {len(self.unused)} {self.origin} tensors unused ({', '.join(self.unused)})"
        return text

    def to_markdown(self) -> str:
        lines = ["| tensor | shape | source | detail |", "|---|---|---|---|"]
        lines += [f"| `{r.name}` | {list(r.shape)} | {r.source} | {r.detail} |" for r in self.rows]
        lines += [f"| `{n}` | | unused | not in {self.model_class} |" for n in self.unused]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ExpansionReport({self.summary()})"
