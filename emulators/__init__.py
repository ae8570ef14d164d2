"""SimPy-timed physics of a QKD link and emulated devices that implement ``drivers.interfaces``."""
