"""Models built from i-ResNet blocks."""

from iresflow.models.classifier import IResNetClassifier
from iresflow.models.flow import IResNetFlow

__all__ = ["IResNetClassifier", "IResNetFlow"]
