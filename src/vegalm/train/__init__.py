"""The training engine shared by fine-tuning (vegalm.adapt) and pretraining (vegalm.pretrain)."""

from vegalm.train.config import TrainConfig
from vegalm.train.engine import Engine, TrainingDiverged, TrainResult, make_accelerator
from vegalm.train.predict import predict
from vegalm.train.saving import sub_state_dict

__all__ = ["Engine", "TrainConfig", "TrainResult", "TrainingDiverged", "make_accelerator", "predict", "sub_state_dict"]
