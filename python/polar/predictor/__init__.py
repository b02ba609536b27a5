"""The PoLar predictor: a frozen text encoder and a small network that predict a program of
layers per question, trained on search results and decoded by beam search (paper section 3;
DESIGN.md section 5).

    predictor = train_from_files(["results.jsonl"], "ckpt/")       # or Predictor.load("ckpt/")
    predictor.predict(["What is 3 + 4?"], k=5)[0][0].program       # Program([0, 1, 1, 2, ...])
"""
from ._config import DecodeConfig, PredictorConfig, TrainConfig
from ._decode import Prediction, decode
from ._encoder import EmbeddingEncoder, HFEncoder, TextEncoder, encode_cached, load_encoder
from ._predictor import Predictor
from ._targets import SearchRecord, TargetReport, build_targets, load_search_results
from ._train import train, train_from_files

__all__ = [
    "DecodeConfig", "EmbeddingEncoder", "HFEncoder", "Prediction", "Predictor", "PredictorConfig",
    "SearchRecord", "TargetReport", "TextEncoder", "TrainConfig", "build_targets", "decode",
    "encode_cached", "load_encoder", "load_search_results", "train", "train_from_files",
]
