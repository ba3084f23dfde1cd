"""The data plane's scenarios, as `run.py` dispatches them: name -> what runs it.

Each takes the command line's options and returns its result (with `rows` for the table);
see each module for what it measures.
"""

import argparse
from collections.abc import Callable
from typing import Any

from bodies import bodies_scenario
from gateway import gateway_scenario, workers_scenario
from instructions import instructions_scenario
from memory import memory_scenario
from routes import routing_scenario

Options = argparse.Namespace
DATAPLANE: dict[str, Callable[[Options], dict[str, Any]]] = {
    "proxy": lambda o: gateway_scenario("proxy", o.seconds, o.connections),
    "eventgateway": lambda o: gateway_scenario("eventgateway", o.seconds, o.connections),
    "workers": lambda o: workers_scenario(o.workers, o.seconds, o.connections),
    "routing": lambda o: routing_scenario(o.seconds, o.connections),
    "memory": lambda o: memory_scenario(o.seconds, o.connections),
    "bodies": lambda o: bodies_scenario(o.seconds, o.connections),
    "instructions": lambda o: instructions_scenario(o.seconds),
}
