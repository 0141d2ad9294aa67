"""The version of cumulo, read by the build and reported by the environment check."""

__version__ = "0.1.0"
