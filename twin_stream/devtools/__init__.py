"""Tools around the twin, not in its data path: the fleet simulator and field-truth
generator, the demo, the local Kafka broker launcher and the PyBaMM oracle."""
