"""TaskModel heads, the loss, the inputs_embeds path and logits -> leaderboard predictions."""

from __future__ import annotations

import pytest
import torch

from framing_fixtures import ENCODERS, TOKENIZERS, bert_encoder, bert_tokenizer, record_examples
from vegalm.adapt.framing import MASKED_SCORE, collate, encode
from vegalm.adapt.heads import TaskModel, loss_fn, span_mean
from vegalm.adapt.predict import to_predictions
from vegalm.data.superglue import get_task, read_split

REAL_TASKS = ["boolq", "cb", "rte", "axb", "axg", "copa", "multirc", "wic", "wsc"]
WIDTH = {"cb": 3, "copa": 2}


def _examples(superglue_dir, task, n):
    split = "test" if task in ("axb", "axg") else "val"
    return read_split(task, superglue_dir, split)[:n]


def _model(tok_name, task):
    tok = TOKENIZERS[tok_name]()
    torch.manual_seed(0)
    return tok, TaskModel(ENCODERS[tok_name](tok), task).eval()


@pytest.mark.parametrize("tok_name", list(TOKENIZERS))
@pytest.mark.parametrize("task", REAL_TASKS)
def test_logits_shape_and_loss_on_real_examples(superglue_dir, task, tok_name):
    tok, model = _model(tok_name, task)
    examples = _examples(superglue_dir, task, 6)
    batch = collate(encode(task, examples, tok, max_length=64), tok.pad_token_id)
    logits = model(batch)
    assert logits.shape == (6, WIDTH.get(task, 2))
    assert torch.isfinite(logits).all()
    loss = loss_fn(logits, batch["labels"])
    loss.backward()
    assert torch.isfinite(loss) and model.head.out_proj.weight.grad is not None


@pytest.mark.parametrize("tok_name", list(TOKENIZERS))
def test_record_scores_are_masked_where_there_is_no_candidate(tok_name):
    tok, model = _model(tok_name, "record")
    batch = collate(encode("record", record_examples(), tok), tok.pad_token_id)
    logits = model(batch)
    assert logits.shape == (3, 4)
    mask = batch["choice_mask"]
    assert (logits[~mask] == MASKED_SCORE).all() and (logits[mask] > MASKED_SCORE / 2).all()
    probs = logits.softmax(-1)
    assert torch.allclose(probs[~mask], torch.zeros(()), atol=1e-6)
    loss_fn(logits, batch["labels"]).backward()


@pytest.mark.parametrize("tok_name", list(TOKENIZERS))
def test_a_feature_scores_the_same_alone_and_padded_in_a_batch(superglue_dir, tok_name):
    # wrong pad ids, attention masks or span offsets would make the padded copy differ
    tok = TOKENIZERS[tok_name]()
    for task in ("wic", "copa"):
        torch.manual_seed(0)
        model = TaskModel(ENCODERS[tok_name](tok), task).eval()
        feats = encode(task, _examples(superglue_dir, task, 8), tok)
        short = min(range(8), key=lambda i: feats[i].length)
        with torch.no_grad():
            together = model(collate(feats, tok.pad_token_id))[short]
            alone = model(collate([feats[short]], tok.pad_token_id))[0]
        assert torch.allclose(together, alone, atol=1e-5), task


def test_inputs_embeds_path_matches_input_ids(superglue_dir):
    for tok_name in TOKENIZERS:
        tok, model = _model(tok_name, "wsc")
        batch = collate(encode("wsc", _examples(superglue_dir, "wsc", 4), tok), tok.pad_token_id)
        emb = model.embed(batch)
        assert emb.shape == (*batch["input_ids"].shape, model.encoder.config.hidden_size)
        with torch.no_grad():
            assert torch.allclose(model(batch), model(batch, inputs_embeds=emb), atol=1e-5)
        # a perturbation of the embeddings changes the logits and receives a gradient
        delta = torch.zeros_like(emb, requires_grad=True)
        loss_fn(model(batch, inputs_embeds=emb.detach() + delta), batch["labels"]).backward()
        assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_span_mean_averages_exactly_the_span():
    hidden = torch.arange(2 * 5 * 1, dtype=torch.float).view(2, 5, 1)
    spans = torch.tensor([[1, 3], [4, 5]])
    assert span_mean(hidden, spans).squeeze(-1).tolist() == [1.5, 9.0]


def test_diagnostic_models_are_the_rte_model():
    a, b = TaskModel(bert_encoder(), "axb"), TaskModel(bert_encoder(), "rte")
    assert a.task == "rte" and a.head.out_proj.out_features == 2
    assert a.head.state_dict().keys() == b.head.state_dict().keys()
    assert TaskModel(bert_encoder(), "wic").head.dense.in_features == 4 * 128


def test_loss_ignores_unlabelled_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0]], requires_grad=True)
    full = loss_fn(logits, torch.tensor([0, -100]))
    assert torch.isclose(full, torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])))
    none = loss_fn(logits, torch.tensor([-100, -100]))
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None


def test_a_few_steps_fit_a_small_batch(superglue_dir):
    # the head and encoder learn through this interface at all (loss falls on 8 CB examples)
    tok = bert_tokenizer()
    torch.manual_seed(0)
    model = TaskModel(bert_encoder(), "cb", dropout=0.0)
    batch = collate(encode("cb", _examples(superglue_dir, "cb", 8), tok, max_length=64), tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = loss_fn(model(batch), batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------- predictions


@pytest.mark.parametrize("task", REAL_TASKS)
def test_predictions_are_accepted_by_the_leaderboard_writer(superglue_dir, task):
    tok, model = _model("bert", task)
    examples = _examples(superglue_dir, task, 20 if task != "multirc" else 40)
    feats = encode(task, examples, tok, max_length=64)
    with torch.no_grad():
        blocks = [model(collate(feats[i : i + 7], tok.pad_token_id)) for i in range(0, len(feats), 7)]
    preds = to_predictions(task, examples, feats, blocks)
    assert set(preds) == {e.key for e in examples}
    lines = get_task(task).leaderboard_lines(examples, preds)
    assert lines
    logits = torch.cat(blocks)
    if task == "copa":
        assert [preds[f.key] for f in feats] == logits.argmax(-1).tolist()
    if task in ("axb", "axg"):
        assert set(preds.values()) <= {"entailment", "not_entailment"}


def test_record_predictions_take_the_best_valid_candidate():
    tok, model = _model("bert", "record")
    examples = record_examples()
    feats = encode("record", examples, tok)
    # padded columns (beyond a query's candidates) hold the best raw score: must be ignored
    logits = torch.tensor([[0.0, 3.0, 1.0, 9.0], [0.5, 9.0, 9.0, 9.0], [0.0, 1.0, 2.0, 4.0]])
    preds = to_predictions("record", examples, feats, logits)
    assert preds == {10: "Bob Jones", 11: "Paris", 12: "Rome"}
    lines = get_task("record").leaderboard_lines(examples, preds)
    assert [line["label"] for line in lines] == ["Bob Jones", "Paris", "Rome"]
    with torch.no_grad():
        real = to_predictions("record", examples, feats, [model(collate(feats, tok.pad_token_id))])
    assert all(real[e.key] in e.candidates for e in examples)


def test_cb_predictions_use_the_label_spellings(superglue_dir):
    examples = _examples(superglue_dir, "cb", 3)
    feats = encode("cb", examples, bert_tokenizer())
    logits = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    preds = to_predictions("cb", examples, feats, logits)
    assert [preds[e.key] for e in examples] == ["neutral", "entailment", "contradiction"]
