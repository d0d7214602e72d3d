"""One sampled parameter of a search space (:class:`Param`): its Optuna distribution, projection
and membership; :mod:`recipe_search.space` builds them from YAML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One sampled recipe field."""

    name: str
    kind: str  # loguniform | uniform | int | choice
    low: float | int | None = None
    high: float | int | None = None
    values: tuple = ()
    log: bool = False

    def distribution(self):
        """The Optuna distribution of this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "loguniform":
            return FloatDistribution(float(self.low), float(self.high), log=True)
        if self.kind == "uniform":
            return FloatDistribution(float(self.low), float(self.high))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return CategoricalDistribution(list(self.values))

    def project(self, value: Any) -> Any:
        """The value of the domain closest to ``value`` (to express a baseline as a point)."""
        if self.kind == "choice":
            if value in self.values:
                return value
            numeric = [v for v in self.values if is_number(v)]
            if is_number(value) and numeric:
                return min(numeric, key=lambda v: abs(v - value))
            return self.values[0]
        value = min(max(value, self.low), self.high)
        return int(round(value)) if self.kind == "int" else float(value)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain (exactly, no projection)."""
        if self.kind == "choice":
            return any(value == v and type(value) is type(v) for v in self.values)
        if isinstance(value, bool) or not is_number(value):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def to_dict(self) -> dict:
        if self.kind == "choice":
            return {"type": "choice", "values": list(self.values)}
        out = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        return out

    def describe(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(fmt(v) for v in self.values) + "}"
        scale = " log" if self.kind == "loguniform" or self.log else ""
        return f"[{fmt(self.low)}, {fmt(self.high)}]{scale}"


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
