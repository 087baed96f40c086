"""t2v-rt: a real-time text-to-video inference runtime."""

__version__ = "0.1.0"
