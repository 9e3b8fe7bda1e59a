"""Rule engine: a safe expression language compiled to closures, alarms, actions.

Public entry points: :class:`RuleEngine` (run rules over sample batches), :func:`compile_expression`
(parse and check one expression, also used by ``gateway check``), :class:`RuleError`.
"""

from gateway.rules.alarms import AlarmState, AlarmStore, QueueAlarmStore
from gateway.rules.compiler import CompiledExpr, compile_expression
from gateway.rules.effects import (
    AlarmAcked,
    AlarmCleared,
    AlarmRaised,
    Effect,
    EventRaised,
    LogMessage,
    PointSet,
    WriteRequest,
)
from gateway.rules.engine import RuleEngine
from gateway.rules.errors import RuleError
from gateway.rules.template import MessageTemplate

__all__ = [
    "AlarmAcked",
    "AlarmCleared",
    "AlarmRaised",
    "AlarmState",
    "AlarmStore",
    "EventRaised",
    "PointSet",
    "QueueAlarmStore",
    "CompiledExpr",
    "Effect",
    "LogMessage",
    "MessageTemplate",
    "RuleEngine",
    "RuleError",
    "WriteRequest",
    "compile_expression",
]
