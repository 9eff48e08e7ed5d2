"""A FreeSWITCH simulator for integration tests: ESL inbound and outbound, channels, applications, callers.

See `engine.FreeSwitchSim`; every modelled behaviour cites its capture or FreeSWITCH source.
"""

from switchctl.sim.config import (
    GatewayBehaviour,
    HangUp,
    Press,
    Route,
    ScriptStep,
    Silence,
    SimConfig,
    UserBehaviour,
)
from switchctl.sim.engine import CallResult, FreeSwitchSim, SimCall

__all__ = [
    "CallResult",
    "FreeSwitchSim",
    "GatewayBehaviour",
    "HangUp",
    "Press",
    "Route",
    "ScriptStep",
    "SimCall",
    "SimConfig",
    "Silence",
    "UserBehaviour",
]
