"""vidray: video corpora to training data and video-classification models on Ray."""

__version__ = "0.1.0"
