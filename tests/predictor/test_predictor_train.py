"""Training: learnability, checkpoints, resume, encoder cache, training from files."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from polar.predictor import DecodeConfig, Predictor, TrainConfig, encode_cached, load_encoder, train, train_from_files
from polar.predictor._predictor import CONFIG_FILE, WEIGHTS_FILE
from polar.predictor._train import LOG_FILE, STATE_FILE
from polar.programs import Program

FAST = TrainConfig(epochs=20, batch_size=16, lr=3e-3, val_fraction=0.2)


def _held_out_top1(predictor, toy) -> float:
    held = toy.family_records(20, toy.HELD_OUT_FILLERS, prefix="h")
    preds = predictor.predict([r.question for r in held], k=3)
    return sum(p[0].program == Program(r.valid_programs[0]) for p, r in zip(preds, held)) / len(held)


@pytest.mark.parametrize("encoder_kind", ["llm", "folder"])
def test_learns_a_planted_program_per_question_family(tmp_path, toy, tiny_bert_dir, encoder_kind):
    """Questions with 'skip' -> skip layer 2; with 'compute' -> repeat layers 2..3. The top-1 on
    held-out questions (unseen filler words) is the planted program; the loss falls."""
    if encoder_kind == "llm":
        encoder, config = toy.toy_llm_encoder(), toy.tiny_config()
    else:
        encoder = load_encoder(str(tiny_bert_dir))
        config = toy.tiny_config(encoder=str(tiny_bert_dir), llm_name=None)
    steps = []
    predictor = train(toy.family_records(60), config, tmp_path / "ckpt", seed=0, train_config=FAST,
                      encoder=encoder, progress=False, on_step=lambda s, losses: steps.append(losses["loss"]))
    history = predictor.metadata["training"]["history"]
    assert len(steps) == 20 * 3 and len(history) == 20
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert predictor.metadata["training"]["best"]["val_top1"] == 1.0
    assert _held_out_top1(predictor, toy) >= 0.95
    # The untrained network does not already do it (the check can fail).
    torch.manual_seed(0)
    assert _held_out_top1(Predictor(predictor.config, encoder), toy) <= 0.6


def test_checkpoint_round_trip(tmp_path, toy, tiny_bert_dir):
    encoder = load_encoder(str(tiny_bert_dir))
    config = toy.tiny_config(encoder=str(tiny_bert_dir), llm_name="toy-llm")
    trained = train(toy.family_records(24), config, tmp_path / "ckpt", seed=1,
                    train_config=TrainConfig(epochs=3, batch_size=8, val_fraction=0.25), encoder=encoder, progress=False)
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert meta["predictor"]["k_max"] == 3 and meta["predictor"]["encoder"] == str(tiny_bert_dir)
    assert meta["llm"] == {"name": "toy-llm", "num_layers": 6}
    assert meta["training"]["train_config"]["epochs"] == 3 and meta["training"]["seed"] == 1
    assert meta["num_parameters"] == trained.num_parameters()
    assert len(meta["training"]["history"]) == 3
    assert meta["encoder"]["identity"] == encoder.identity()

    loaded = Predictor.load(tmp_path / "ckpt")  # the folder encoder is rebuilt from its spec
    questions = [r.question for r in toy.family_records(10, toy.HELD_OUT_FILLERS)]
    cfg = DecodeConfig(fallback_full=True)
    assert loaded.predict(questions, k=4, decode=cfg) == trained.predict(questions, k=4, decode=cfg)
    s1, o1 = trained.logits(questions)
    s2, o2 = loaded.logits(questions)
    assert torch.equal(s1, s2) and torch.equal(o1, o2)
    # save() -> load() of the loaded one gives the same bytes of weights.
    loaded.save(tmp_path / "copy")
    a, b = load_file(str(tmp_path / "ckpt" / WEIGHTS_FILE)), load_file(str(tmp_path / "copy" / WEIGHTS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_load_refuses_other_encoder_weights(tmp_path, toy):
    p = Predictor(toy.tiny_config(), toy.toy_llm_encoder(seed=0))
    p.save(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="needs the target LLM"):
        Predictor.load(tmp_path / "ckpt")
    same = Predictor.load(tmp_path / "ckpt", encoder=toy.toy_llm_encoder(seed=0))
    assert same.num_parameters() == p.num_parameters()
    with pytest.raises(ValueError, match="other weights"):
        Predictor.load(tmp_path / "ckpt", encoder=toy.toy_llm_encoder(seed=1))
    with pytest.raises(FileNotFoundError, match="not a predictor checkpoint"):
        Predictor.load(tmp_path)


class _Killed(Exception):
    pass


def test_resume_after_interruption_gives_the_same_weights(tmp_path, toy):
    """A run stopped mid-way (after the last saved state, work since then lost) and rerun ends with
    exactly the weights, history and checkpoint of an uninterrupted run (dropout on: RNG restored)."""
    records = toy.family_records(40)
    config = toy.tiny_config(dropout=0.2)
    tc = TrainConfig(epochs=4, batch_size=8, lr=3e-3, val_fraction=0.2, save_every_steps=3)  # 4 steps/epoch
    whole = train(records, config, tmp_path / "whole", seed=5, train_config=tc, encoder=toy.toy_llm_encoder(),
                  progress=False)

    def kill_at(n):
        def hook(step, losses):
            if step == n:
                raise _Killed
        return hook

    out = tmp_path / "resumed"
    for n in (7, 11):  # killed mid-epoch (state saved at steps 3, 4, 6, 8, 9, ...), then after resuming
        with pytest.raises(_Killed):
            train(records, config, out, seed=5, train_config=tc, encoder=toy.toy_llm_encoder(), progress=False,
                  on_step=kill_at(n))
        state = torch.load(out / STATE_FILE, weights_only=True)
        assert not state["done"] and state["step"] < n
    seen = []
    resumed = train(records, config, out, seed=5, train_config=tc, encoder=toy.toy_llm_encoder(), progress=False,
                    on_step=lambda s, _: seen.append(s))
    assert seen[0] == 10 and seen[-1] == 16  # resumed from the state saved at step 9
    a, b = whole.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in (WEIGHTS_FILE, LOG_FILE):
        assert (tmp_path / "whole" / name).read_bytes() == (out / name).read_bytes()
    assert whole.metadata["training"]["history"] == resumed.metadata["training"]["history"]

    # A finished run is loaded, not retrained; other settings in the same folder are refused.
    again = train(records, config, out, seed=5, train_config=tc, encoder=toy.toy_llm_encoder(), progress=False,
                  on_step=lambda s, _: pytest.fail("retrained a finished run"))
    assert all(torch.equal(a[k], again.net.state_dict()[k]) for k in a)
    with pytest.raises(ValueError, match="other settings.*seed"):
        train(records, config, out, seed=6, train_config=tc, encoder=toy.toy_llm_encoder(), progress=False)


def test_encoder_outputs_are_cached(tmp_path, toy):
    encoder = toy.toy_llm_encoder()
    texts = ["skip the apple", "compute the river now", "x"]
    first = encode_cached(encoder, texts, tmp_path)
    assert [t.shape for t in first] == [(3, 16), (4, 16), (1, 16)]
    assert len(list(tmp_path.glob("encoder-*.safetensors"))) == 1

    def refuse(_texts):
        raise AssertionError("encoded again instead of reading the cache")

    encoder.encode = refuse
    again = encode_cached(encoder, texts, tmp_path)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    with pytest.raises(AssertionError, match="encoded again"):  # other texts: another key
        encode_cached(encoder, texts + ["new"], tmp_path)
    with pytest.raises(AssertionError, match="encoded again"):  # other weights: another key
        other = toy.toy_llm_encoder(seed=3)
        other.encode = refuse
        encode_cached(other, texts, tmp_path)


def test_train_from_files(tmp_path, toy):
    results = tmp_path / "results.jsonl"
    toy.write_results(results, toy.family_records(16), settings={"model": "toy-llm", "num_layers": 6})
    tc = TrainConfig(epochs=2, batch_size=8, val_fraction=0.25)
    enc = toy.toy_llm_encoder()
    predictor = train_from_files([results], tmp_path / "ckpt", config={"encoder": "llm", "k_max": 3, "d": 16,
                                                                        "n_heads": 2, "n_blocks": 1},
                                 seed=0, train_config=tc, encoder=enc, progress=False)
    assert predictor.config.num_layers == 6 and predictor.config.llm_name == "toy-llm"
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    from polar.predictor._targets import sha256_file
    assert meta["training"]["data_files"] == {str(results): sha256_file(results)}
    assert meta["training"]["targets"]["with_targets"] == 16 and meta["training"]["n_val"] == 4
    assert len(predictor.predict(["skip it"], k=2)[0]) == 2

    with pytest.raises(ValueError, match="num_layers is 8"):
        train_from_files([results], tmp_path / "other", config={"encoder": "llm", "num_layers": 8},
                         train_config=tc, encoder=enc, progress=False)
    mixed = tmp_path / "mixed.jsonl"
    toy.write_results(mixed, toy.family_records(2, prefix="m"), settings={"model": "toy-llm", "num_layers": 7})
    with pytest.raises(ValueError, match="mix settings: num_layers"):
        train_from_files([results, mixed], tmp_path / "other", config={"encoder": "llm"}, encoder=enc, progress=False)
    bare = tmp_path / "bare.jsonl"
    toy.write_results(bare, toy.family_records(2))
    with pytest.raises(ValueError, match="depth"):
        train_from_files([bare], tmp_path / "other", config={"encoder": "llm"}, encoder=enc, progress=False)
    nothing = tmp_path / "nothing.jsonl"
    toy.write_results(nothing, [toy.SearchRecord("z", "q", (), 0.0)], settings={"num_layers": 6})
    with pytest.raises(ValueError, match="no problem has a usable valid program"):
        train_from_files([nothing], tmp_path / "other", config={"encoder": "llm"}, encoder=enc, progress=False)


_KILLED_RUN = r'''
import sys, time, zlib
import torch
from torch import nn
from polar.predictor import EmbeddingEncoder, PredictorConfig, TrainConfig, train_from_files

torch.set_num_threads(1)


class ToyTokenizer:
    def __call__(self, texts):
        return {"input_ids": [[1 + zlib.crc32(w.encode()) % 511 for w in t.split()] for t in texts]}


torch.manual_seed(0)
encoder = EmbeddingEncoder(nn.Embedding(512, 16), ToyTokenizer(), name="toy-llm")


def slow(step, losses):
    print("step", step, flush=True)
    time.sleep(0.05)


train_from_files([sys.argv[1]], sys.argv[2], config=dict(CONFIG), seed=2, train_config=TrainConfig(**TC),
                 encoder=encoder, progress=False, on_step=slow)
print("finished", flush=True)
'''


def test_resume_after_sigkill_of_a_real_process(tmp_path, toy):
    """SIGKILL at an arbitrary moment leaves a loadable state; the rerun ends with the weights of
    an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys

    results = tmp_path / "results.jsonl"
    toy.write_results(results, toy.family_records(40), settings={"model": "toy-llm", "num_layers": 6})
    config = dict(encoder="llm", k_max=3, d=32, n_blocks=1, n_heads=2, dropout=0.1, encoder_max_tokens=32)
    tc = dict(epochs=5, batch_size=8, lr=3e-3, val_fraction=0.2, save_every_steps=1)
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN.replace("CONFIG", repr(config)).replace("TC", repr(tc)))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(results), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step") and int(line.split()[1]) >= 7:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert not state["done"] and 7 <= state["step"] < 20

    seen = []
    resumed = train_from_files([results], out, config=config, seed=2, train_config=TrainConfig(**tc),
                               encoder=toy.toy_llm_encoder(), progress=False, on_step=lambda s, _: seen.append(s))
    assert seen and seen[0] == state["step"] + 1 and seen[-1] == 20
    whole = train_from_files([results], tmp_path / "whole", config=config, seed=2, train_config=TrainConfig(**tc),
                             encoder=toy.toy_llm_encoder(), progress=False)
    a, b = whole.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


RUN4_PROGRAM = (0, 1) + (2, 3) * 4 + (4, 5)  # layers 2..3 run 4 times: outside the paper's space


def _run4_records(toy, n, fillers=None, prefix="p"):
    """toy.family_records with the 'compute' family's program replaced by RUN4_PROGRAM."""
    from dataclasses import replace

    records = toy.family_records(n, fillers or toy.FILLERS, prefix=prefix)
    return [replace(r, valid_programs=(RUN4_PROGRAM,)) if r.valid_programs == (toy.REPEAT_PROGRAM,) else r
            for r in records]


def test_learns_a_block_run_four_times_with_max_runs_5(tmp_path, toy):
    """max_runs = 5 keeps the 'compute' problems (a block run 4 times) that max_runs = 2 drops,
    trains a 6-class op head, and decodes the planted 4-run program on held-out questions."""
    records = _run4_records(toy, 60)
    encoder = toy.toy_llm_encoder()
    predictor = train(records, toy.tiny_config(max_runs=5), tmp_path / "ckpt", seed=0, train_config=FAST,
                      encoder=encoder, progress=False)
    assert predictor.config.max_runs == 5 and predictor.net.op_head.out_features == 6
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert meta["predictor"]["max_runs"] == 5
    assert meta["training"]["targets"]["with_targets"] == 60 and meta["training"]["targets"]["not_in_space"] == 0
    held = _run4_records(toy, 20, toy.HELD_OUT_FILLERS, prefix="h")
    preds = predictor.predict([r.question for r in held], k=3)
    hits = sum(p[0].program == Program(r.valid_programs[0]) for p, r in zip(preds, held))
    assert hits >= 18, hits  # 20 of 20 here (seed 0)
    assert any(4 in p[0].compact.ops for p in preds)
    loaded = Predictor.load(tmp_path / "ckpt", encoder=encoder)
    assert loaded.config.max_runs == 5 and loaded.predict(["compute the apple"], k=2) == \
        predictor.predict(["compute the apple"], k=2)
    # The paper's space drops every 'compute' problem of the same records.
    from polar.predictor import build_targets

    targets, report = build_targets(records, toy.D, toy.K_MAX, 0.3)
    assert len(targets) == 30 and report.not_in_space == 30


def test_one_training_step_with_max_runs_5(tmp_path, toy):
    seen = []
    p = train(_run4_records(toy, 8), toy.tiny_config(max_runs=5), tmp_path / "ckpt", seed=0,
              train_config=TrainConfig(epochs=1, batch_size=8, val_fraction=0.0), encoder=toy.toy_llm_encoder(),
              progress=False, on_step=lambda s, losses: seen.append(losses))
    assert len(seen) == 1 and all(math.isfinite(v) for v in seen[0].values())
    seg, ops = p.logits(["compute it"])
    assert seg.shape == (1, toy.D) and ops.shape == (1, toy.D, 6)


def test_checkpoint_without_max_runs_loads_as_the_paper_space(tmp_path, toy):
    p = Predictor(toy.tiny_config(), toy.toy_llm_encoder())
    p.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert meta["predictor"].pop("max_runs") == 2
    (tmp_path / "ckpt" / CONFIG_FILE).write_text(json.dumps(meta))  # as written before max_runs existed
    loaded = Predictor.load(tmp_path / "ckpt", encoder=toy.toy_llm_encoder())
    assert loaded.config.max_runs == 2 and loaded.net.op_head.out_features == 3
    questions = ["skip the apple", "compute the river"]
    assert loaded.predict(questions, k=3) == p.eval().predict(questions, k=3)


def test_shipped_checkpoint_matches_its_config():
    """The shipped segment predictor (no max_runs key when trained) has the op head its config says."""
    from polar.predictor import PredictorConfig
    from polar.predictor._predictor import DEFAULT_SEGMENTS_CHECKPOINT

    if not (DEFAULT_SEGMENTS_CHECKPOINT / CONFIG_FILE).is_file():
        pytest.skip("no shipped checkpoint in this install")
    meta = json.loads((DEFAULT_SEGMENTS_CHECKPOINT / CONFIG_FILE).read_text())
    cfg = PredictorConfig.from_dict(meta["predictor"])
    assert cfg.max_runs == meta["predictor"].get("max_runs", 2)
    weights = load_file(str(DEFAULT_SEGMENTS_CHECKPOINT / WEIGHTS_FILE))
    assert weights["op_head.weight"].shape == (cfg.max_runs + 1, cfg.d)


def _kill_at(n):
    def hook(step, losses):
        if step == n:
            raise _Killed
    return hook


def test_resume_from_a_state_saved_before_max_runs(tmp_path, toy):
    records = toy.family_records(16)
    tc = TrainConfig(epochs=2, batch_size=8, val_fraction=0.0, save_every_steps=1)
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        train(records, toy.tiny_config(), out, seed=0, train_config=tc, encoder=toy.toy_llm_encoder(),
              progress=False, on_step=_kill_at(2))
    state = torch.load(out / STATE_FILE, weights_only=True)
    del state["settings"]["predictor"]["max_runs"]
    torch.save(state, out / STATE_FILE)
    seen = []
    train(records, toy.tiny_config(), out, seed=0, train_config=tc, encoder=toy.toy_llm_encoder(), progress=False,
          on_step=lambda s, _: seen.append(s))
    assert state["step"] == 1 and seen == [2, 3, 4]  # resumed, not refused
    with pytest.raises(ValueError, match="other settings.*predictor"):
        train(records, toy.tiny_config(max_runs=3), out, seed=0, train_config=tc, encoder=toy.toy_llm_encoder(),
              progress=False)
