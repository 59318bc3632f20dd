"""calbench: does a language model know what it doesn't know?"""

__version__ = "0.1.0"
