"""The PoLar predictor: a frozen text encoder and a small network that predict a program of
layers per question, trained on search results and decoded by beam search (paper section 3;
docs/architecture.md section 11).

    predictor = train_from_files(["results.jsonl"], "ckpt/")       # or Predictor.load("ckpt/")
    predictor.predict(["What is 3 + 4?"], k=5)[0][0].program       # Program([0, 1, 1, 2, ...])

The scorer (docs/architecture.md section 12): P(program correct | input) for a library's programs, trained
on sweep matrices, and top-k by expected pass@k:

    scorer = train_scorer(read_sweep("train.jsonl"), read_sweep("val.jsonl"))  # or Scorer.load("ckpt/")
    proba = scorer.predict_proba(["What is 3 + 4?"])                            # [1, L]
    scorer.select(proba[0], k=5)                                                # entry indices
"""
from ._config import DecodeConfig, PredictorConfig, ScorerConfig, ScorerTrainConfig, TrainConfig
from ._decode import Prediction, decode
from ._encoder import EmbeddingEncoder, HFEncoder, TextEncoder, encode_cached, load_encoder
from ._features import llm_features, llm_features_cached, program_features, text_features
from ._predictor import Predictor, load_predictor
from ._scorer import Scorer, sweep_prompts, train_scorer, train_scorer_from_files
from ._selection import CoValidity, expected_pass_at_k, pass_at_k, select_top_k, static_cover
from ._targets import SearchRecord, TargetReport, build_targets, load_search_results, records_from_sweep, recorded_depth
from ._train import train, train_from_files

__all__ = [
    "DecodeConfig", "EmbeddingEncoder", "HFEncoder", "Prediction", "Predictor", "PredictorConfig",
    "SearchRecord", "TargetReport", "TextEncoder", "TrainConfig", "build_targets", "decode",
    "encode_cached", "load_encoder", "load_predictor", "load_search_results", "recorded_depth", "train", "train_from_files",
    "CoValidity", "Scorer", "ScorerConfig", "ScorerTrainConfig", "expected_pass_at_k", "llm_features",
    "llm_features_cached", "pass_at_k", "program_features", "select_top_k", "static_cover", "sweep_prompts",
    "records_from_sweep", "text_features", "train_scorer", "train_scorer_from_files",
]
