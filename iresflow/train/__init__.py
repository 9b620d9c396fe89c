"""Training: state, pure steps, sharding, checkpoints, the train-and-evaluate job."""

from iresflow.train.config import default_config
from iresflow.train.state import TrainState, create_optimizer
from iresflow.train.trainer import TrainingDivergedError, build_model, train_and_evaluate

__all__ = ["TrainState", "TrainingDivergedError", "build_model", "create_optimizer", "default_config",
           "train_and_evaluate"]
