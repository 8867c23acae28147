"""Causal-LM text: records -> conversations -> rendered template -> token ids with a target mask.

- A conversation is a tuple of (role, content) pairs; alpaca records become (user, assistant).
- The model's own chat template renders it (else a named one, `TEMPLATES`); the rendered text
  is tokenized once without adding special tokens again (the template wrote BOS if it has one).
- Which tokens are targets comes from positions, never from searching the text: the template
  is rendered again for every prefix of the conversation (up to each assistant turn, with the
  generation prompt; and through it), so each assistant turn is a span of characters
  [prompt end, turn end) of the whole text; the tokenizer's offsets map spans to tokens. The
  span runs to the end of the turn as the template writes it: its end-of-turn token (and EOS)
  is trained, so the model learns to stop.
- Plain text (format: text) is one stream of documents, each followed by EOS, cut into rows of
  max_length tokens; every token is a target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weitiao.errors import UserError
from weitiao.tasks.common.rows import TokenRows

# Named chat templates for models without one (task.template). Jinja, as transformers reads them.
TEMPLATES = {
    "chatml": ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "alpaca": ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
               "{% elif m['role'] == 'user' %}{{ '### Instruction:\n' + m['content'] + '\n\n' }}"
               "{% else %}{{ '### Response:\n' + m['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
               "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"),
    "plain": ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + eos_token + '\n' }}"
              "{% else %}{{ m['content'] + '\n' }}{% endif %}{% endfor %}"),
}
END_OF_TURN = {"chatml": "<|im_end|>"}  # what a template ends a turn with, besides EOS (generation stops at it)

Conversation = tuple  # ((role, content), ...)


def alpaca_conversation(instruction: str, inp: str, output: str) -> Conversation:
    """An alpaca record as a (user, assistant) exchange; the input follows the instruction."""
    prompt = instruction.strip() + (f"\n\n{inp.strip()}" if inp and inp.strip() else "")
    return (("user", prompt), ("assistant", output.strip()))


def set_template(tokenizer, name: str | None, model: str) -> str:
    """Give the tokenizer the chat template to use: the model's own, else `name`. Returns which."""
    if name:
        tokenizer.chat_template = TEMPLATES[name]
        return name
    if getattr(tokenizer, "chat_template", None):
        return "the model's own"
    raise UserError("task.template", f"model '{model}' has no chat template of its own",
                    f"set task.template to one of {', '.join(TEMPLATES)} (or use data.format: text)")


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    """The conversation through the tokenizer's chat template, which transformers renders in Jinja's
    sandbox: a template that reaches for Python internals (a handed run's, a model's) stops with
    one line, having run nothing."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except TemplateError as e:
        blocked = type(e).__name__ == "SecurityError"
        raise UserError("chat template", f"the tokenizer's chat template {'was stopped by the sandbox' if blocked else 'failed'} "
                        f"({type(e).__name__}: {e})", "use a template that only renders the messages (task.template names a built-in one)") from None


def render(tokenizer, conv: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character span of every assistant turn (its content and end-of-turn).

    Raises:
        UserError: the template does not render a conversation as the sum of its prefixes
            (it rewrites earlier turns), so the turns cannot be located by position.
    """
    messages = [{"role": r, "content": c} for r, c in conv]
    text = _render(tokenizer, messages)
    spans = []
    for k, (role, _) in enumerate(conv):
        if role != "assistant":
            continue
        prompt = _render(tokenizer, messages[:k], generation_prompt=True)
        through = _render(tokenizer, messages[:k + 1])
        if not (text.startswith(through) and through.startswith(prompt)):
            raise UserError("task.template", "the chat template renders earlier turns differently once later ones follow, so the "
                            "assistant's tokens cannot be located by position", "set task.template to one of " + ", ".join(TEMPLATES))
        spans.append((len(prompt), len(through)))
    return text, spans


def prompt_text(tokenizer, conv: Conversation) -> str:
    """What a model is given to answer the conversation's last user turn: all before the last
    assistant turn, with the generation prompt."""
    last = max(k for k, (r, _) in enumerate(conv) if r == "assistant") if any(r == "assistant" for r, _ in conv) else len(conv)
    return _render(tokenizer, [{"role": r, "content": c} for r, c in conv[:last]], generation_prompt=True)


@dataclass
class Encoded(TokenRows):
    """Rows of token ids and their targets (True: the token is predicted and trained on).

    segments: per row, the lengths of the examples packed into it (one, unless task.packing).
    prompts / references: held-out prompts (token ids) and the answers they should get, for the
    generations written at every evaluation.
    """

    input_ids: list[list[int]]
    targets: list[list[bool]]
    segments: list[list[int]]
    n_examples: int
    truncated: int = 0  # examples cut to max_length (their response partly kept)
    dropped: int = 0  # examples whose every target token was past max_length: not trained, counted
    prompts: list[list[int]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    chat: bool = False  # conversations through the chat template (else plain text)

    @property
    def examples(self) -> int:
        return self.n_examples

    def subset(self, index: list[int]) -> "Encoded":
        pick = lambda xs: [xs[i] for i in index]  # noqa: E731
        return Encoded(pick(self.input_ids), pick(self.targets), pick(self.segments), len(index), prompts=self.prompts,
                       references=self.references, chat=self.chat)


def encode_conversations(tokenizer, convs: list[Conversation], max_length: int, train_on: str, samples: int) -> Encoded:
    """Token ids and target masks for each conversation (see the module's docstring)."""
    rendered = [render(tokenizer, c) for c in convs]
    enc = tokenizer([t for t, _ in rendered], add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast)
    ids_out, targets_out, truncated, dropped = [], [], 0, 0
    for k, (text, spans) in enumerate(rendered):
        ids = enc["input_ids"][k]
        if tokenizer.is_fast:
            starts = [a for a, _ in enc["offset_mapping"][k]]
        else:  # a slow tokenizer has no offsets: each token's start from the decoded prefix lengths
            starts = _starts_by_decoding(tokenizer, ids)
        if train_on == "all":
            target = [True] * len(ids)
        else:
            target = [any(a <= s < b for a, b in spans) for s in starts]
        if len(ids) > max_length:
            truncated += 1
            ids, target = ids[:max_length], target[:max_length]
        if not any(target[1:]):  # nothing left to learn from (the first token is never predicted)
            dropped += 1
            continue
        ids_out.append(ids)
        targets_out.append(target)
    prompts, refs = [], []
    for conv in convs[:samples]:
        assistant = [c for r, c in conv if r == "assistant"]
        if assistant:
            prompts.append(tokenizer(prompt_text(tokenizer, conv), add_special_tokens=False)["input_ids"][-max_length:])
            refs.append(assistant[-1])
    return Encoded(ids_out, targets_out, [[len(x)] for x in ids_out], len(convs), truncated, dropped, prompts, refs)


def _starts_by_decoding(tokenizer, ids: list[int]) -> list[int]:
    starts, pos = [], 0
    for i in range(len(ids)):
        starts.append(pos)
        pos = len(tokenizer.decode(ids[:i + 1]))
    return starts


def encode_documents(tokenizer, docs: list[str], max_length: int, samples: int) -> Encoded:
    """Documents as one token stream (each followed by EOS), cut into rows of max_length tokens."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=True)["input_ids"]:
        stream.extend(ids)
        if eos is not None and (not ids or ids[-1] != eos):
            stream.append(eos)
    rows = [stream[i:i + max_length] for i in range(0, len(stream), max_length)]
    rows = [r for r in rows if len(r) > 1]
    prompts, refs = [], []
    half = max(1, min(32, max_length // 2))
    for r in rows[:samples]:  # continue the first half of a row; the reference is what followed
        prompts.append(r[:half])
        refs.append(tokenizer.decode(r[half:2 * half], skip_special_tokens=True))
    return Encoded(rows, [[True] * len(r) for r in rows], [[len(r)] for r in rows], len(docs), prompts=prompts, references=refs)


def pack(enc: Encoded, max_length: int) -> Encoded:
    """Several examples per row of at most max_length tokens (first fit, longest first), so that
    little is padding. The first token of every packed example is not a target: nothing of its
    own comes before it. Attention stays inside each example (`collate` restarts the positions)."""
    order = sorted(range(len(enc)), key=lambda i: (-len(enc.input_ids[i]), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(enc.input_ids[i])
        for b, free in enumerate(room):
            if free >= n:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_length - n)
    ids, targets, segments = [], [], []
    for members in bins:
        ids.append([t for i in members for t in enc.input_ids[i]])
        targets.append([t and j > 0 for i in members for j, t in enumerate(enc.targets[i])])
        segments.append([len(enc.input_ids[i]) for i in members])
    return Encoded(ids, targets, segments, enc.n_examples, enc.truncated, enc.dropped, enc.prompts, enc.references, enc.chat)


def collate(enc: Encoded, index: list[int], pad_id: int, multiple: int = 1) -> dict:
    """Right-padded rows. labels: the token where it is a target, else -100 (padding never is).

    Packed rows (several segments) get position_ids restarting at every example and no
    attention_mask: transformers then keeps attention inside each run of increasing positions
    (a block-diagonal causal mask on eager and SDPA attention). The padding after a packed row is
    a run of its own.
    """
    import torch

    longest = -(-max(len(enc.input_ids[i]) for i in index) // multiple) * multiple
    ids = torch.full((len(index), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(index), longest), -100, dtype=torch.long)
    packed = any(len(enc.segments[i]) > 1 for i in index)
    for row, i in enumerate(index):
        x = torch.tensor(enc.input_ids[i], dtype=torch.long)
        ids[row, :len(x)] = x
        labels[row, :len(x)] = torch.where(torch.tensor(enc.targets[i]), x, -100)
    if not packed:
        mask = (torch.arange(longest)[None, :] < torch.tensor([len(enc.input_ids[i]) for i in index])[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    positions = torch.zeros((len(index), longest), dtype=torch.long)
    for row, i in enumerate(index):
        start = 0
        for n in enc.segments[i] + [longest - len(enc.input_ids[i])]:
            positions[row, start:start + n] = torch.arange(n)
            start += n
    return {"input_ids": ids, "position_ids": positions, "labels": labels}
