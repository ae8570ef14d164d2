"""One typed async contract per device role. The stack in ``bench/`` imports only these."""

from drivers.interfaces.clock import ClockConstraints, ClockStatus, FrequencyReference
from drivers.interfaces.detectors import CoolingState, DetectorConstraints, DetectorStatus, DetectorSystem
from drivers.interfaces.interferometer import PhaseActuator, PhaseActuatorConstraints, PhaseActuatorStatus
from drivers.interfaces.polarization import (
    PolarizationConstraints,
    PolarizationController,
    PolarizationStatus,
)
from drivers.interfaces.pump import PumpConstraints, PumpLaser, PumpStatus
from drivers.interfaces.tagger import (
    Acquisition,
    AcquisitionRequest,
    CoincidenceCounts,
    CoincidenceEvents,
    CoincidenceSpec,
    CorrelationHistogram,
    EventType,
    HistogramSpec,
    TagBlock,
    TaggerConstraints,
    TaggerStatus,
    TimeTagger,
)

__all__ = [
    "Acquisition",
    "AcquisitionRequest",
    "ClockConstraints",
    "ClockStatus",
    "CoincidenceCounts",
    "CoincidenceEvents",
    "CoincidenceSpec",
    "CoolingState",
    "CorrelationHistogram",
    "DetectorConstraints",
    "DetectorStatus",
    "DetectorSystem",
    "EventType",
    "FrequencyReference",
    "HistogramSpec",
    "PhaseActuator",
    "PhaseActuatorConstraints",
    "PhaseActuatorStatus",
    "PolarizationConstraints",
    "PolarizationController",
    "PolarizationStatus",
    "PumpConstraints",
    "PumpLaser",
    "PumpStatus",
    "TagBlock",
    "TaggerConstraints",
    "TaggerStatus",
    "TimeTagger",
]
