"""Project-owned local Apache Kafka broker (KRaft, single node) for dev, CI and tests.

The broker jars are resolved once per Kafka version with Maven into
``~/.cache/twin-stream/kafka-<version>/libs`` (:func:`fetch`); :func:`up`
starts a combined controller+broker JVM bound to 127.0.0.1 and returns once it
answers Kafka requests, :func:`down` stops it, :func:`status` finds it.
Transactions (exactly-once) work on it: every internal topic is sized for one
node.  Command line: ``python -m twin_stream.devtools.broker up|down|status|fetch``.

Example::

    from twin_stream.devtools.broker import up, down
    info = up()                       # BrokerInfo(bootstrap="127.0.0.1:40123", ...)
    ...                               # aiokafka / faust against info.bootstrap
    down()
"""

from twin_stream.devtools.broker.fetch import DEFAULT_VERSION, BrokerError, fetch, libs_dir
from twin_stream.devtools.broker.node import BrokerInfo, default_run_dir, down, ping, status, up

__all__ = [
    "DEFAULT_VERSION",
    "BrokerError",
    "BrokerInfo",
    "default_run_dir",
    "down",
    "fetch",
    "libs_dir",
    "ping",
    "status",
    "up",
]
