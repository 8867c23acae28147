"""Causal LM instruction tuning: each trap that SFT tools have shipped bugs for, on a tiny Llama
built from a config (a byte-level BPE tokenizer trained on the test's own text)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers import tiny_llama, write_config

from weitiao.tasks.causal_lm import TASK
from weitiao.tasks.causal_lm.lm_text import collate, encode_conversations, encode_documents, pack, render

FILLER = ["the", "a", "we", "saw", "today", "and", "then", "went", "home", "it", "was", "in", "on"]


def sentiment_records(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(FILLER, 5) + [rng.choice(["great", "lovely", "superb"] if label == "pos" else ["awful", "dull", "bad"])]
        rng.shuffle(words)
        out.append({"instruction": "Is this positive or negative?", "input": " ".join(words),
                    "output": "positive" if label == "pos" else "negative"})
    return out


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("llama")
    texts = [" ".join(r.values()) for r in sentiment_records(random.Random(0), 200)] + ["user assistant system hello world"]
    return tiny_llama(folder / "model", texts)


@pytest.fixture(scope="module")
def tok(lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(lm)


CONV = (("user", "Is this positive or negative?\n\nit was great"), ("assistant", "positive"),
        ("user", "and this: it was dull"), ("assistant", "negative"))


def targets_of(tok, enc, row=0) -> str:
    return tok.decode([t for t, keep in zip(enc.input_ids[row], enc.targets[row]) if keep])


def test_only_the_responses_and_their_end_of_turn_are_targets(tok):
    enc = encode_conversations(tok, [CONV], 256, "responses", 0)
    assert targets_of(tok, enc) == "positive<|im_end|>\nnegative<|im_end|>\n"
    # the end-of-turn token (the EOS of this tokenizer) of each response is trained: the model learns to stop
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    ids, mask = enc.input_ids[0], enc.targets[0]
    assert sum(1 for t, m in zip(ids, mask) if t == eos and m) == 2
    assert sum(1 for t, m in zip(ids, mask) if t == eos and not m) == 2  # the user turns' end-of-turn is not
    everything = encode_conversations(tok, [CONV], 256, "all", 0)
    assert all(everything.targets[0])


def test_a_response_that_contains_its_prompt_text_is_located_by_position_not_by_search(tok):
    """A string search for the answer would find 'positive' inside the prompt first."""
    conv = (("user", "say positive"), ("assistant", "positive"))
    enc = encode_conversations(tok, [conv], 256, "responses", 0)
    assert targets_of(tok, enc) == "positive<|im_end|>\n"
    text, spans = render(tok, conv)
    assert text[spans[0][0]:spans[0][1]] == "positive<|im_end|>\n"


def test_the_template_bos_is_not_doubled(lm, tmp_path):
    """A template that writes BOS itself, tokenized without adding special tokens again: one BOS."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(lm)
    t.bos_token = "<|endoftext|>"
    t.add_bos_token = True
    from weitiao.tasks.causal_lm.lm_text import set_template

    set_template(t, "alpaca", "tiny")
    enc = encode_conversations(t, [CONV[:2]], 256, "responses", 0)
    bos = t.bos_token_id
    assert enc.input_ids[0][0] == bos and enc.input_ids[0].count(bos) == 1
    assert targets_of(t, enc).startswith("positive")


def test_a_model_without_a_template_needs_one_named(tmp_path):
    from transformers import AutoTokenizer

    from weitiao.errors import UserError
    from weitiao.tasks.causal_lm.lm_text import set_template

    folder = tiny_llama(tmp_path / "m", ["hello world"] * 10, template=False)
    t = AutoTokenizer.from_pretrained(folder)
    with pytest.raises(UserError, match="task.template"):
        set_template(t, None, "m")
    assert set_template(t, "chatml", "m") == "chatml"


def test_a_template_that_rewrites_earlier_turns_is_refused(tok):
    from weitiao.errors import UserError

    tok = type(tok).from_pretrained(tok.name_or_path)
    # only the last assistant message is shown in full: earlier turns render differently once later ones follow
    tok.chat_template = ("{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}{{ m['role'] }}{% endif %}"
                         "{% endfor %}{% if add_generation_prompt %}>{% endif %}")
    with pytest.raises(UserError, match="task.template"):
        render(tok, CONV)


def test_an_example_cut_away_entirely_is_dropped_and_counted(tok):
    long_prompt = (("user", " ".join(["today"] * 200)), ("assistant", "positive"))
    half = (("user", "it was great " * 3), ("assistant", " ".join(["positive"] * 60)))
    enc = encode_conversations(tok, [long_prompt, half, CONV[:2]], 40, "responses", 0)
    assert enc.dropped == 1 and enc.truncated == 2 and len(enc) == 2
    assert all(len(ids) <= 40 for ids in enc.input_ids)
    assert all(any(t[1:]) for t in enc.targets)  # every kept row has something to learn


def test_training_pads_right_and_padding_is_never_a_target(tok):
    enc = encode_conversations(tok, [CONV[:2], CONV], 256, "responses", 0)
    batch = collate(enc, [0, 1], tok.pad_token_id)
    short = len(enc.input_ids[0])
    assert (batch["input_ids"][0, short:] == tok.pad_token_id).all() and (batch["attention_mask"][0, short:] == 0).all()
    assert (batch["labels"][0, short:] == -100).all() and batch["attention_mask"][0, :short].all()
    assert TASK.count_targets(batch) == sum(sum(t[1:]) for t in enc.targets)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_packed_example_does_not_see_its_neighbours(lm, tok, attention):
    """Two examples packed in one row: changing the first leaves the second's logits unchanged, and they
    equal the second's logits computed alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(lm, attn_implementation=attention).eval()
    a1 = (("user", "it was great"), ("assistant", "positive"))
    a2 = (("user", "we saw the awful dull home and then it was bad today"), ("assistant", "negative"))
    b = (("user", "we went home"), ("assistant", "negative"))

    from weitiao.tasks.causal_lm.lm_text import Encoded

    def logits_of_b(first):
        one = encode_conversations(tok, [first, b], 256, "responses", 0)
        n_a, n_b = len(one.input_ids[0]), len(one.input_ids[1])
        row = Encoded([one.input_ids[0] + one.input_ids[1]], [one.targets[0] + one.targets[1]], [[n_a, n_b]], 2)
        batch = collate(row, [0], tok.pad_token_id)
        assert "attention_mask" not in batch and batch["position_ids"][0].tolist() == list(range(n_a)) + list(range(n_b))
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        return out[n_a:n_a + n_b]

    alone = encode_conversations(tok, [b], 256, "responses", 0)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(alone.input_ids)).logits[0]
    with_a1, with_a2 = logits_of_b(a1), logits_of_b(a2)
    torch.testing.assert_close(with_a1, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(with_a2, ref, atol=1e-5, rtol=1e-4)


def test_packing_never_trains_across_a_boundary(tok):
    enc = encode_conversations(tok, [CONV[:2], CONV[2:]], 256, "all", 0)
    packed = pack(enc, 256)
    assert packed.segments[0] == sorted([len(x) for x in enc.input_ids], reverse=True)
    start = packed.segments[0][0]
    assert packed.targets[0][start] is False  # the first token of the second example is not predicted from the first


def test_the_loss_is_normalized_by_the_target_tokens_of_the_whole_window(lm, tok, tmp_path):
    """Micro-batches with very different numbers of target tokens, accumulated, give the gradient of
    one batch of their union (not the mean of per-micro-batch means)."""
    from accelerate import Accelerator
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    from transformers import AutoModelForCausalLM

    from weitiao.config import TrainingConfig
    from weitiao.rundir.folder import MetricsLog
    from weitiao.train.loop import train_loop

    convs = [(("user", "hi"), ("assistant", " ".join(["positive"] * k))) for k in (1, 12, 3, 30)]
    enc = encode_conversations(tok, convs, 256, "responses", 0)
    opts = TASK.Options()

    def grads(batches, accum, name):
        (tmp_path / name).mkdir()
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(lm)
        seen = []
        handle = register_optimizer_step_pre_hook(lambda o, a, k: seen.append([p.grad.clone() for g in o.param_groups for p in g["params"]]))

        def compute_loss(m, batch):
            labels = batch.pop("labels")
            return TASK.loss(TASK.forward(m, batch, labels), labels, opts)[0]
        try:
            train_loop(model, Accelerator(cpu=True), param_groups=[{"params": list(model.parameters()), "lr": 1e-3}],
                       epoch_batches=lambda e: batches, make_batch=lambda idx: collate(enc, idx, tok.pad_token_id),
                       compute_loss=compute_loss, count_targets=TASK.count_targets, evaluate=lambda m: {"loss": 0.0},
                       save_best=lambda m: None, run_dir=tmp_path / name, log=MetricsLog(tmp_path / name / "m.jsonl"),
                       opts=TrainingConfig(max_steps=1, batch_size=4, grad_accum=accum, max_grad_norm=None, progress=False, warmup_ratio=0.0),
                       train_mode=lambda m: m.eval())
        finally:
            handle.remove()
        return seen[0]

    union = grads([[0, 1, 2, 3]], 1, "one")
    split = grads([[0], [1, 2], [3]], 3, "three")
    for a, b in zip(union, split):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert max(float(g.abs().max()) for g in union) > 1e-2  # not trivially zero


def test_only_target_positions_reach_the_output_layer_and_the_loss_is_the_plain_one(lm, tok):
    """The output layer on target positions alone gives the loss of the full logits."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(lm).eval()
    enc = encode_conversations(tok, [CONV, CONV[:2]], 256, "responses", 0)
    batch = collate(enc, [0, 1], tok.pad_token_id)
    labels = batch.pop("labels")
    with torch.no_grad():
        out = TASK.forward(model, batch, labels)
        total, n = TASK.loss(out, labels, TASK.Options())
        full = model(**batch).logits
    plain = F.cross_entropy(full[:, :-1].reshape(-1, full.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    assert n == TASK.count_targets({"labels": labels}) == out.logits.shape[0]
    torch.testing.assert_close(total, plain, rtol=1e-5, atol=1e-5)


def test_batched_generation_pads_left_and_answers_as_one_by_one(lm, tok):
    from transformers import AutoModelForCausalLM

    from weitiao.tasks.common.generation import Sampling, generate_ids
    from weitiao.tasks.causal_lm.lm_text import prompt_text

    model = AutoModelForCausalLM.from_pretrained(lm)
    prompts = [tok(prompt_text(tok, ((("user", u),))), add_special_tokens=False)["input_ids"]
               for u in ("hi", "it was a great day and we went home", "dull")]
    s, stops = Sampling(max_new_tokens=6), [tok.convert_tokens_to_ids("<|im_start|>")]
    together = generate_ids(model, tok.pad_token_id, prompts, s, stops, "cpu", batch_size=3)
    alone = [generate_ids(model, tok.pad_token_id, [p], s, stops, "cpu")[0] for p in prompts]
    assert together == alone and all(len(x) == 6 for x in together)


def test_documents_are_one_stream_cut_into_rows(tok):
    docs = ["it was great " * 20, "we went home " * 30]
    enc = encode_documents(tok, docs, 32, 1)
    stream = [t for row in enc.input_ids for t in row]
    assert all(len(r) == 32 for r in enc.input_ids[:-1]) and stream.count(tok.eos_token_id) == 2
    assert enc.examples == 2 and enc.prompts and enc.references[0]


def test_rouge_l_by_hand():
    from weitiao.tasks.common.generation import rouge_l

    # LCS("a b c d", "a c d e") = 3: precision 3/4, recall 3/4
    assert rouge_l(["a b c d"], ["a c d e"]) == pytest.approx(0.75)
    assert rouge_l(["x"], ["y"]) == 0.0


def alpaca_files(folder: Path, n: int = 160, seed: int = 0) -> dict:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(sentiment_records(rng, n)))
    (folder / "dev.json").write_text(json.dumps(sentiment_records(rng, 24)))
    return {"train": str(folder / "train.json"), "validation": str(folder / "dev.json"), "format": "alpaca", "max_length": 64}


def test_sft_end_to_end_predict_merge_and_plain_peft(lm, tmp_path):
    """LoRA SFT from the command line: perplexity falls; generations are written at every evaluation; the
    adapter loads with plain peft onto the base model, the merged model with plain AutoModelForCausalLM,
    and both generate the same greedy tokens as `weitiao predict`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weitiao.cli import main
    from weitiao.predict import predict

    # 80 examples, 3 epochs of 5 steps at a high learning rate: evaluations at steps 5, 7, 10, 14 and 15 (two of them
    # mid-epoch), perplexity from about 6 to about 1.4
    cfg = {"version": 1, "model": str(lm), "task": {"type": "causal_lm", "generate": {"samples": 4, "max_new_tokens": 4, "metrics": ["rouge_l"]}},
           "data": alpaca_files(tmp_path / "data", 80), "strategy": {"method": "lora", "r": 8, "target_modules": "all-linear"},
           "training": {"epochs": 3, "batch_size": 16, "lr": 2e-2, "progress": False, "warmup_ratio": 0.0, "eval_every": 7},
           "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval"] for r in records if "eval" in r]
    assert [r["step"] for r in records if "eval" in r] == [5, 7, 10, 14, 15]
    assert evals[-1]["perplexity"] < 0.5 * evals[0]["perplexity"], [e["perplexity"] for e in evals]
    gens = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    assert len({g["step"] for g in gens}) == len(evals) and all(len([g for g in gens if g["step"] == s]) == 4 for s in {g["step"] for g in gens})
    assert {"prompt", "reference", "generation"} <= set(gens[0])
    assert "rouge_l" in evals[-1]

    rows = predict(str(run), ["Is this positive or negative?\n\nit was great today"], None, None)
    tok = AutoTokenizer.from_pretrained(run / "model")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Is this positive or negative?\n\nit was great today"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lm), run / "adapter")
    for m in (merged, peft_model):
        out = m.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
        assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip() == rows[0]["generation"]
    assert rows[0]["generation"] in ("positive", "negative")


def test_plain_text_continued_pretraining_and_the_text_probe(lm, tmp_path):
    """format: text (a .txt of paragraphs): every token is a target; the loss falls; the forgetting probe
    reports perplexity on reference text before and after."""
    from weitiao.cli import main

    rng = random.Random(3)
    paragraphs = [" ".join(rng.choice(["we went home", "it was great", "the day was dull"]) for _ in range(12)) for _ in range(60)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(paragraphs))
    (tmp_path / "reference.txt").write_text("hello world, the user and the assistant.\n\nsystem hello")
    cfg = {"version": 1, "model": str(lm), "task": "causal_lm", "data": {"train": str(tmp_path / "corpus.txt"), "max_length": 64},
           "strategy": {"method": "full", "probe": str(tmp_path / "reference.txt")},
           "training": {"epochs": 3, "batch_size": 8, "lr": 3e-3, "progress": False}, "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "t"]) == 0
    metrics = json.loads((tmp_path / "runs" / "t" / "metrics.json").read_text())
    evals = [json.loads(line)["eval"] for line in (tmp_path / "runs" / "t" / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert metrics["validation"]["perplexity"] < 0.3 * evals[0]["perplexity"]
    probe = metrics["probe"]
    assert probe["before"]["perplexity"] > 1 and probe["after"]["perplexity"] != probe["before"]["perplexity"]


def test_chat_keeps_the_conversation(lm, tmp_path):
    import io

    from weitiao.cli import main
    from weitiao.data.examples import Examples
    from weitiao.predict import chat, default_sampling, predict
    from weitiao.rundir.opening import open_run

    cfg = {"version": 1, "model": str(lm), "task": "causal_lm", "data": alpaca_files(tmp_path / "data", 32),
           "strategy": "full", "training": {"max_steps": 2, "batch_size": 16, "progress": False}, "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "c"]) == 0
    run_dir = str(tmp_path / "runs" / "c")
    out = io.StringIO()
    chat(run_dir, io.StringIO("hello\nit was great\n/reset\nit was great\n/exit\nnever read\n"), out, {"max_new_tokens": 3})
    run = open_run(run_dir)
    sampling = default_sampling(run.opts, {"max_new_tokens": 3})

    def answer(*conv) -> str:  # what predict answers to a whole conversation (its last user turn, after the earlier turns)
        return run.task.answer(run, Examples([conv], None, None, [1], "test"), sampling)[0]["generation"]

    first = answer(("user", "hello"))
    second = answer(("user", "hello"), ("assistant", first), ("user", "it was great"))
    fresh = predict(run, ["it was great"], None, None, sampling={"max_new_tokens": 3})[0]["generation"]
    assert fresh != second, "the earlier turns change this answer: the test can tell a kept conversation from a fresh one"
    # the second reply answers the two-turn conversation; after /reset the same text is a fresh conversation; /exit leaves
    assert out.getvalue() == f"{first}\n{second}\n{fresh}\n"


@pytest.mark.parametrize("records, field, words", [
    ([{"messages": "hi"}], "data.train", "not a list"),
    ([{"messages": [{"role": "robot", "content": "x"}]}], "data.train", "role 'robot'"),
    ([{"messages": [{"role": "user"}]}], "data.train", "message 1"),
    ([{"instruction": "x", "output": 3}], "data.train", "'output' is a int"),
    ([{"question": "x", "answer": "y"}], "data.format", "cannot tell"),
])
def test_bad_records_name_the_field_and_write_nothing(lm, tmp_path, capsys, records, field, words):
    from weitiao.cli import main

    (tmp_path / "t.json").write_text(json.dumps(records * 4))
    cfg = {"version": 1, "model": str(lm), "task": "causal_lm", "data": {"train": str(tmp_path / "t.json")},
           "output": {"dir": str(tmp_path / "runs")}}
    assert main(["train", str(write_config(tmp_path / "c.yaml", cfg)), "--name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {field}") and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_config_mistakes_of_a_language_model_run(lm, tmp_path, capsys):
    from weitiao.cli import main

    data = alpaca_files(tmp_path / "d", 16)
    no_template = tiny_llama(tmp_path / "plain", ["hello world"] * 10, template=False)
    capsys.readouterr()
    cases = [({"model": str(no_template), "task": "causal_lm", "data": data}, "error: task.template"),
             ({"model": str(lm), "task": "classification", "data": data}, "error: data.format"),
             ({"model": str(lm), "task": {"type": "causal_lm", "train_on": "answers"}, "data": data}, "error: task.train_on"),
             ({"model": str(lm), "task": {"type": "causal_lm", "template": "chatlm"}, "data": data}, "error: task.template")]
    for i, (cfg, start) in enumerate(cases):
        cfg = {"version": 1, **cfg, "output": {"dir": str(tmp_path / "runs")}}
        assert main(["train", str(write_config(tmp_path / f"c{i}.yaml", cfg)), "--name", "x"]) == 2, cfg
        err = capsys.readouterr().err.strip()
        assert err.startswith(start) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_generation_options_on_a_classifier_are_refused(tmp_path, capsys):
    """A classifier run folder (a tiny BERT with its head): valid options, refused because it does not generate."""
    from helpers import minilm_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from weitiao.cli import main
    from weitiao.config import dump_config, validate

    run = tmp_path / "cls"
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32, id2label={0: "neg", 1: "pos"})).save_pretrained(run / "model")
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(run / "model")
    (run / "config.yaml").write_text(dump_config(validate({"version": 1, "model": str(run / "model"), "data": {"train": "train.csv"}})))
    capsys.readouterr()
    assert main(["predict", str(run), "--text", "hi"]) == 0  # the run folder is a working classifier
    assert json.loads(capsys.readouterr().out)["label"] in ("neg", "pos")
    for option, value in (("--max-new-tokens", "3"), ("--temperature", "0.5"), ("--num-beams", "2")):
        assert main(["predict", str(run), "--text", "hi", option, value]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"error: {option}: a classification run does not generate text; fix: leave out the generation options\n"
        assert captured.out == ""


def test_an_empty_prompt_is_named_by_its_option(tmp_path, capsys):
    from weitiao.cli import main

    assert main(["predict", str(tmp_path), "--prompt", "hello", "  "]) == 2
    assert capsys.readouterr().err.startswith("error: --prompt: text 2 is empty")
